"""Progress display: a redrawn bar on a terminal, whole timed lines in a pipe or a file."""

import io
import sys

from srt_jax.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(n_updates: int, **kwargs) -> None:
    with progress_bar(n_updates, "work", "tok", **kwargs) as bar:
        for i in range(n_updates):
            bar.update(1)
            bar.set_postfix(loss=f"{1 / (i + 1):.4f}", refresh=False)


def test_a_log_gets_whole_lines_at_most_every_interval(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    drive(1000)  # far faster than the 10 s interval: only the first and the last line
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("work:   0%") and lines[-1].startswith("work: 100%")
    assert "1.00k/1.00k" in lines[-1] and "tok/s" in lines[-1] and "loss=0.0010" in lines[-1]


def test_a_log_line_carries_rate_and_eta(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    clock = iter(range(0, 10_000, 4))  # every call to the clock: 4 s later
    monkeypatch.setattr("tqdm.std.time", lambda: next(clock))
    drive(10)
    lines = log.getvalue().splitlines()
    assert 3 <= len(lines) <= 12 and all(line.startswith("work:") for line in lines)
    middle = lines[1]  # a line written during the work: its rate and time left
    assert "s/tok" in middle  # the rate (slow work shows seconds per unit)
    assert "[00:20<00:28" in middle  # elapsed < time left


def test_a_terminal_gets_a_bar_redrawn_in_place(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    drive(50)
    text = terminal.getvalue()
    assert text.count("\r") >= 2  # redrawn in place
    assert text.rstrip("\n").count("\n") == 0  # one line, ended once at the close


def test_disabled_writes_nothing(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    drive(10, disable=True)
    assert log.getvalue() == ""
