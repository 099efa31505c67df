import io
import math

import pytest

from natgrad.utils.progress import ProgressBar, format_duration, format_rate


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _bar(total=1000, **kwargs):
    clock = FakeClock()
    out = io.StringIO()
    bar = ProgressBar(total, "trpo", file=out, clock=clock, **kwargs)
    return bar, clock, out


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "00:00"),
        (59.4, "00:59"),
        (59.6, "01:00"),
        (754, "12:34"),
        (3725, "1:02:05"),
        (90000, "25:00:00"),
        (math.nan, "?"),
        (math.inf, "?"),
        (-1, "?"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (0.5, "0.5"),
        (12.345, "12.3"),
        (999.4, "999"),
        (1234.0, "1.23k"),
        (2.5e6, "2.5M"),
        (7e12, "7e+03G"),
        (math.nan, "?"),
    ],
)
def test_format_rate(rate, text):
    assert format_rate(rate) == text


def test_rate_eta_and_line_format():
    bar, clock, _ = _bar(is_tty=False)
    assert math.isnan(bar.rate()) and bar.format().endswith("ETA ?")
    clock.t += 4.0
    bar.update(250, ret=123.456, it=3)
    assert bar.rate() == pytest.approx(62.5)
    assert bar.eta() == pytest.approx(12.0)
    assert bar.format() == (
        "trpo:  25% | 250/1000 steps | 62.5 steps/s | ETA 00:12 | ret=123.5 it=3"
    )
    clock.t += 1.0
    bar.update(0, ret=-1.0)  # postfix replaces the old value, keeps the others
    assert bar.format().endswith("ETA 00:15 | ret=-1 it=3")


def test_non_tty_prints_a_line_every_k_percent():
    bar, clock, out = _bar(is_tty=False, line_every_pct=25)
    for _ in range(10):
        clock.t += 1.0
        bar.update(100)
    bar.close()
    lines = out.getvalue().splitlines()
    # One line per 25% bucket entered (30%, 50%, 80%, 100%); close adds none.
    assert [line.split("|")[1].strip() for line in lines] == [
        "300/1000 steps",
        "500/1000 steps",
        "800/1000 steps",
        "1000/1000 steps",
    ]
    assert "\r" not in out.getvalue()


def test_non_tty_close_prints_final_state_once():
    bar, clock, out = _bar(total=10, is_tty=False, line_every_pct=50)
    bar.update(3)
    assert out.getvalue() == ""
    bar.close()
    bar.close()
    assert out.getvalue().splitlines() == [bar.format()]
    assert "3/10" in out.getvalue()


def test_tty_redraws_in_place_at_most_every_interval():
    bar, clock, out = _bar(is_tty=True, min_interval=0.1)
    bar.update(1)  # first update always draws
    for _ in range(4):
        clock.t += 0.02
        bar.update(1)  # within 0.1 s of the last draw: skipped
    clock.t += 0.05
    bar.update(1)  # 0.13 s after the first draw
    assert out.getvalue().count("\r") == 2
    bar.update(994)  # reaching the total always draws
    assert out.getvalue().count("\r") == 3
    bar.close()
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    assert "1000/1000 steps" in text.rsplit("\r", 1)[1]


def test_tty_pads_shorter_line_over_previous_one():
    bar, clock, out = _bar(is_tty=True, min_interval=0.0)
    clock.t += 1.0
    bar.update(1, ret="a very long postfix value")
    bar.postfix.clear()
    bar.update(1)
    first, second = out.getvalue().split("\r")[1:]
    assert len(second) == len(first)


def test_disable_and_bad_arguments():
    bar, clock, out = _bar(disable=True, is_tty=True)
    bar.update(1000)
    bar.close()
    assert out.getvalue() == ""
    for total in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="total"):
            ProgressBar(total)
    with pytest.raises(ValueError, match="line_every_pct"):
        ProgressBar(10, line_every_pct=0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        ProgressBar(10, disable=True).update(-1)
