"""A small document tree for the knowledge-base tests: four topics, four file types, English
and Chinese, nested folders. Each topic's words appear in its own file only."""

from __future__ import annotations

from pathlib import Path

DOCS = {
    "bread.txt": (
        "Baking bread at home\n\n"
        "Mix flour, water, salt and yeast into a dough. Knead it for ten minutes until it is "
        "smooth and elastic. Let the dough rise in a warm place for about an hour, until it "
        "has doubled in size.\n\n"
        "Shape the loaf, let it prove again, then bake it in a hot oven at 230 degrees for "
        "thirty minutes. The crust browns through the Maillard reaction."
    ),
    "astronomy/mars.md": (
        "# Mars\n\n"
        "Mars is the fourth planet from the Sun. Its red colour comes from iron oxide dust "
        "on its surface.\n\n"
        "## Moons\n\n"
        "Mars has two small moons, Phobos and Deimos, probably captured asteroids. Phobos "
        "orbits so close that it will break apart in about fifty million years."
    ),
    "astronomy/saturn.html": (
        "<html><head><title>Saturn</title><style>p {color: red}</style></head><body>"
        "<h1>Saturn</h1><p>Saturn is the sixth planet and a gas giant. Its rings are made of "
        "ice and rock particles.</p><p>Titan, its largest moon, has a thick nitrogen "
        "atmosphere and lakes of liquid methane.</p><script>var x = 1;</script></body></html>"
    ),
    "zh/tea.md": (
        "# 绿茶\n\n"
        "绿茶是不经过发酵的茶。龙井产自杭州西湖一带，以色绿、香郁、味甘、形美著称。\n\n"
        "## 冲泡\n\n"
        "冲泡绿茶的水温一般在八十度左右，水太烫会把茶叶烫熟，使茶汤变苦。"
    ),
}


def write_docs(root: Path, docs: dict[str, str] = DOCS) -> Path:
    for name, text in docs.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
