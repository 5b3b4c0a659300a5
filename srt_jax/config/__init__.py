"""Run configuration: the schema (:mod:`.schema`, with the ``model`` and ``train`` sections in
:mod:`.model` and :mod:`.train`, and the key rules in :mod:`.keys`) and its loading machinery
(:mod:`.loading`).

``from srt_jax.config import RunConfig, load_config, config_hash`` is the public interface.
"""

from srt_jax.config.keys import backbone_of
from srt_jax.config.loading import (
    apply_overrides,
    build_config,
    config_hash,
    dump_config,
    flat_dict,
    from_dict,
    load_config,
    read_yaml,
    replace,
    to_dict,
    yaml_key_lines,
)
from srt_jax.config.model import Backbone, MambaConfig, ModelConfig
from srt_jax.config.schema import DataConfig, EvalConfig, RunConfig, SamplerMode, SynthConfig
from srt_jax.config.train import (
    AdaptiveBatchConfig,
    DAdaptConfig,
    Objective,
    OptimizerName,
    ORPOConfig,
    ProdigyConfig,
    TrainConfig,
    TransferConfig,
    USGMConfig,
)

__all__ = [
    "AdaptiveBatchConfig",
    "Backbone",
    "DAdaptConfig",
    "DataConfig",
    "EvalConfig",
    "MambaConfig",
    "ModelConfig",
    "ORPOConfig",
    "Objective",
    "OptimizerName",
    "ProdigyConfig",
    "RunConfig",
    "SamplerMode",
    "SynthConfig",
    "TrainConfig",
    "TransferConfig",
    "USGMConfig",
    "apply_overrides",
    "backbone_of",
    "build_config",
    "config_hash",
    "dump_config",
    "flat_dict",
    "from_dict",
    "load_config",
    "read_yaml",
    "replace",
    "to_dict",
    "yaml_key_lines",
]
