"""Progress bars of the verbs (``r1probe.cli_options.ProgressBars``): rate and ETA, quiet when asked."""

import io
import time

from r1probe.cli_options import ProgressBars


def _capture(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    return buf


def test_step_messages_drive_a_bar_with_rate_and_eta(monkeypatch):
    buf = _capture(monkeypatch)
    bars = ProgressBars()
    time.sleep(0.01)
    bars("gsm8k: 2/4")
    assert "gsm8k" in bars.bars and bars.bars["gsm8k"].n == 2
    bars("probe: [1/3] layer1_pos-1: bypass 0.1")
    bars("probe: layer 2: -1: auroc 0.9")  # not a step: printed as a line
    bars("gsm8k: 4/4")
    assert "gsm8k" not in bars.bars  # closed at its total
    bars.close()
    out = buf.getvalue()
    assert "item/s" in out and "<" in out  # rate and the elapsed<remaining (ETA) field
    assert "probe: layer 2: -1: auroc 0.9" in out and "layer1_pos-1: bypass 0.1" in out


def test_the_first_chunk_counts_in_the_rate(monkeypatch):
    _capture(monkeypatch)
    bars = ProgressBars()
    t0 = bars._since
    bars("x: 1/2")
    assert bars.bars["x"].start_t <= t0 + 1e-6


def test_a_line_between_bars_restarts_the_next_bars_clock(monkeypatch):
    """Work a plain line reported (e.g. a search's setup) does not count in the next bar's rate."""
    import time

    _capture(monkeypatch)
    bars = ProgressBars()
    t0 = bars._since
    time.sleep(0.05)
    bars("setup done (5 s)")
    assert bars._since > t0
    bars("x: 1/2")
    assert bars.bars["x"].start_t >= t0 + 0.04
    since = bars._since
    time.sleep(0.01)
    bars("a line while x runs")
    assert bars.bars["x"].n == 1 and bars._since == since  # a line beside an open bar leaves the clock
    bars.close()


def test_quiet_prints_nothing(monkeypatch):
    buf = _capture(monkeypatch)
    bars = ProgressBars(quiet=True)
    bars("gsm8k: 1/4")
    bars("a plain line")
    bars.counter("gen")(1, 2)
    bars.close()
    assert buf.getvalue() == ""
