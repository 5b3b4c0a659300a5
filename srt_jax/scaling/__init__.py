"""Scaling-law analysis: load results, fit laws with uncertainty, plot and report.

Modules, one job each:

- ``points``: the table of runs (N total / non-embedding, D, C, loss, metrics, curves);
  ``loaders`` and ``mlflow_sqlite``: importers that build it.
- ``laws``: law forms and the compute-optimal algebra; ``objective``: Huber objectives on
  log residuals with gradients; ``lbfgs``: L-BFGS-B runs on them.
- ``approach3`` (summed Huber, variable projection), ``approach1`` (curve envelope),
  ``approach2`` (IsoFLOP profiles), ``kaplan`` and ``frontier`` (alternative laws).
- ``bootstrap`` (resampling runs), ``identifiability``, ``predict`` (held-out check,
  bootstrap bands), ``validation`` (the extrapolation check and the grade: is the fit
  supported by its data?), ``data_constrained`` (Muennighoff's law for runs that repeat
  their data).
- ``analysis`` (every fit of one source), ``plots`` (figures), ``report`` (fit.json,
  figures and report.md) with ``html_report`` (report.html), ``groups`` (a fit per value
  of a config key and their comparison, ``--group-by``). The CLI entry is ``srt_jax.commands.fit``.
- ``advice`` (``srt-jax advise``: N*, D*, expected loss and metrics at a budget from a
  supported fit); ``transfer_curve`` (``srt-jax fit-transfer``: fine-tuned quality against
  the parent's pre-training compute).
"""
