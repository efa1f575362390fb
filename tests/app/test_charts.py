"""The report's line chart puts its legend where the lines are not."""

from PIL import Image

from app.demo.charts import COLOURS, Line, _Frame, legend_corner, line_chart

FRAME = _Frame(70, 52, 550, 288, (100, 800), (30.0, 40.0), log_x=True)
BOX = (150, 54)


def _line(*mean):
    x = (100, 200, 400, 800)
    return Line("a", x, mean, mean, mean)


def test_the_legend_avoids_the_lines():
    # high on the left (the label-efficiency shape): not top-left
    corner = legend_corner([_line(39.5, 39.5, 37, 35), _line(33, 33, 33.5, 33.5)], FRAME, BOX)
    assert corner != (FRAME.left + 8, FRAME.top + 6)
    # lines across the top: a bottom corner
    corner = legend_corner([_line(39.5, 39.5, 39.5, 39.5)], FRAME, BOX)
    assert corner[1] > FRAME.top + FRAME.height / 2
    # nothing in the way: top-left
    assert legend_corner([_line(31, 31, 31, 31)], FRAME, BOX) == (FRAME.left + 8, FRAME.top + 6)


def test_the_chart_draws_every_line_and_its_legend(tmp_path):
    lines = [_line(39.5, 39.5, 37, 35), Line("b", (100, 800), (33, 34), (32, 33), (34, 35))]
    out = line_chart(lines, tmp_path / "c.png", "title", "verdicts", "mIoU", ("base", 31.0))
    image = Image.open(out).convert("RGB")
    assert image.size == (640, 400)
    colours = {image.getpixel((x, y)) for x in range(70, 620) for y in range(52, 340)}
    assert COLOURS[0] in colours and COLOURS[1] in colours
