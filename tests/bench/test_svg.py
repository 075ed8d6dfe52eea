"""The report's charts, written as SVG by hand: axes that tell the truth, text that is escaped."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

from tokenrelay.bench import svg

NS = {"svg": "http://www.w3.org/2000/svg"}


def _parse(text: str) -> ET.Element:
    return ET.fromstring(text)  # well-formed XML, or this raises


def _panels(root: ET.Element) -> list[ET.Element]:
    return root.findall("svg:g[@class='panel']", NS)


def _texts(element: ET.Element, kind: str) -> list[str]:
    return [t.text or "" for t in element.iter(f"{{{NS['svg']}}}text") if t.get("class") == kind]


def test_memory_that_grows_by_one_mib_is_drawn_from_zero() -> None:
    """The bug: RSS from 100 to 101 MiB filled its axis, and looked like a steep climb."""
    rss = svg.Series("", [(0.0, 100.0), (5.0, 100.5), (10.0, 101.0)])
    root = _parse(svg.chart("server", svg.Axis("s"), [svg.Panel(svg.Axis("RSS (MiB)"), [rss])]))
    ticks = _texts(_panels(root)[0], "y-tick")
    assert ticks[0] == "0"
    assert float(ticks[-1].replace(",", "")) >= 101
    (line,) = root.iter(f"{{{NS['svg']}}}polyline")
    heights = [float(point.split(",")[1]) for point in (line.get("points") or "").split()]
    assert max(heights) - min(heights) < 5  # pixels: a 1% change looks like one


def test_each_panel_has_its_own_named_axis_over_one_shared_x() -> None:
    cpu = svg.Panel(svg.Axis("CPU (% of one core)"), [svg.Series("", [(0, 10.0), (1, 90.0)])])
    conns = svg.Panel(svg.Axis("open connections"), [svg.Series("", [(0, 1000.0), (1, 2000.0)])])
    root = _parse(svg.chart("server", svg.Axis("seconds"), [cpu, conns]))
    panels = _panels(root)
    assert [_texts(p, "axis-name") for p in panels] == [
        ["CPU (% of one core)"],
        ["open connections"],
    ]
    tops = [float(_texts(p, "y-tick")[-1].replace(",", "")) for p in panels]
    assert 90 < tops[0] <= 100  # each axis spans its own data, with a little room above
    assert 2000 < tops[1] <= 2500
    assert _texts(root, "axis-name")[-1] == "seconds"
    assert len(root.findall("svg:g/svg:rect[@fill='none']", NS)) == 2  # a frame per panel


def test_ticks_fall_on_round_numbers_with_the_decimals_they_need() -> None:
    shares = svg.Panel(svg.Axis("share", limits=(0, 1)), [svg.Series("", [(0, 0.0), (1, 1.0)])])
    root = _parse(svg.chart("t", svg.Axis("x"), [shares]))
    assert _texts(root, "y-tick") == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    latency = svg.Panel(svg.Axis("share"), [svg.Series("", [(193.0, 0.0), (407.0, 100.0)])])
    root = _parse(svg.chart("t", svg.Axis("ms", from_zero=False), [latency]))
    # the low end goes out to a labelled tick; the high end stops at the data (no blank tail)
    assert _texts(root, "x-tick") == ["150", "200", "250", "300", "350", "400"]


def test_a_log_axis_takes_the_ticks_it_is_given() -> None:
    levels = [1, 10, 100, 1000]
    rate = svg.Panel(svg.Axis("tokens/s"), [svg.Series("", [(c, c * 3.0) for c in levels])])
    root = _parse(svg.chart("sweep", svg.Axis("streams", log=True, ticks=levels), [rate]))
    assert _texts(root, "x-tick") == ["1", "10", "100", "1,000"]
    assert not list(root.iter(f"{{{NS['svg']}}}circle"))  # dots only when asked
    line = next(root.iter(f"{{{NS['svg']}}}polyline"))
    spaced = [float(p.split(",")[0]) for p in (line.get("points") or "").split()]
    gaps = [b - a for a, b in itertools.pairwise(spaced)]
    assert max(gaps) - min(gaps) < 1  # each tenfold step is as wide as the last


def test_labels_are_escaped_and_a_flat_or_empty_series_still_draws() -> None:
    hostile = svg.Series('<script>alert("x")</script>', [(0, 0.0), (1, 0.0)])
    empty = svg.Series("none yet", [])
    text = svg.chart("a & b", svg.Axis("x <y>"), [svg.Panel(svg.Axis("z"), [hostile, empty])])
    assert "<script" not in text
    root = _parse(text)
    assert root.findtext("svg:title", namespaces=NS) == "a & b"
    assert float(_texts(_panels(root)[0], "y-tick")[0]) == 0
