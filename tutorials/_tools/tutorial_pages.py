"""Read the py:percent tutorials and turn them into reStructuredText pages for the docs.

The tutorials in ``tutorials/<lang>/*.py`` are jupytext "percent" scripts: a YAML header in
comments, then cells that start with ``# %%`` (code) or ``# %% [markdown]`` (markdown, every
line commented out). This module parses that format itself, so the documentation build needs
neither jupytext nor a Jupyter kernel, and nothing is executed.

The markdown of the tutorials is kept to a small subset, which is converted here:

* headings ``#``, ``##``, ``###``; paragraphs; ``-`` bullet and ``1.`` numbered lists;
* display math between ``$$`` lines, inline math ``$...$``;
* fenced code blocks (```` ```bash ````), inline code, ``**bold**``, ``*italic*`` and links.

Inline markup that touches a Chinese character is separated from it by an escaped space, which
reStructuredText needs and which renders as nothing.

Run as a script, ``python tutorial_pages.py DOCS_SOURCE`` writes
``DOCS_SOURCE/<lang>/_tutorials/<name>.rst`` for every tutorial (and a ``.gitignore`` that
keeps the folder out of git); conf.py does this at every build. Pages are rewritten only when
their text changes, and pages of deleted tutorials are removed.
"""
import io
import os
import re
import sys
import tokenize
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
TUTORIALS = os.path.dirname(HERE)
LANGS = ("en", "zh")
OUT_FOLDER = "_tutorials"

NOTE = {
    "en": ("This page is generated from ``{src}`` and shown here without its outputs. Run it "
           "as a notebook (``make notebooks``, then open ``tutorials/_build/{nb}``) or as a "
           "script (``python {src}``) to see the figures and results."),
    "zh": ("本页由 ``{src}`` 生成，这里不显示运行结果。将其作为 notebook 运行（先执行 "
           "``make notebooks``，再打开 ``tutorials/_build/{nb}``），或作为脚本运行（"
           "``python {src}``），即可看到图像与结果。"),
}

_CELL = re.compile(r"^# %%(?P<rest>.*)$")


# --- the py:percent format --------------------------------------------------------------------
def read_cells(path):
    """``(header, cells)`` of a py:percent file.

    ``header`` is the text of the jupytext YAML header (without the comment marks);
    ``cells`` is a list of ``(kind, text)`` with kind ``'markdown'`` or ``'code'``. Markdown
    text has its ``# `` prefixes removed; code text is as written, with surrounding blank lines
    stripped.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = []
    if lines and lines[0] == "# ---":
        end = lines.index("# ---", 1)
        header = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in
                  lines[1:end]]
        lines = lines[end + 1:]
    cells, kind, body = [], None, []

    def flush():
        if kind is None:
            return
        text = "\n".join(body).strip("\n")
        if kind == "markdown":
            text = "\n".join(_uncomment(line) for line in text.splitlines())
        cells.append((kind, text))

    for line in lines:
        m = _CELL.match(line)
        if m:
            flush()
            kind = "markdown" if "[markdown]" in m.group("rest") else "code"
            body = []
        elif kind is not None:
            body.append(line)
    flush()
    return "\n".join(header), cells


def _uncomment(line):
    if line.startswith("# "):
        return line[2:]
    if line.strip() == "#":
        return ""
    raise ValueError(f"markdown line is not commented out: {line!r}")


def code_without_comments(code):
    """The code with comments and blank lines removed (strings and layout otherwise kept)."""
    out = []
    tokens = tokenize.generate_tokens(io.StringIO(code + "\n").readline)
    comments = {}
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.start[1]
    for n, line in enumerate(code.splitlines(), 1):
        if n in comments:
            line = line[:comments[n]]
        line = line.rstrip()
        if line:
            out.append(line)
    return "\n".join(out)


# --- markdown subset -> reStructuredText ------------------------------------------------------
_INLINE = re.compile(
    r"(?P<code>`[^`]+`)"
    r"|(?P<math>\$[^$]+\$)"
    r"|(?P<bold>\*\*[^*]+\*\*)"
    r"|(?P<em>(?<![*\w])\*[^*\s][^*]*\*)"
    r"|(?P<link>\[[^\]]+\]\([^)\s]+\))")
_HEADING = re.compile(r"^(?P<level>#{1,3}) (?P<title>.+)$")
_BULLET = re.compile(r"^(?P<mark>[-*]|\d+\.) (?P<text>.*)$")
_UNDERLINE = {1: "=", 2: "-", 3: "~"}


def _ok_before(ch):
    # what docutils accepts right before an inline start-string
    return ch.isspace() or ch in "-:/'\"<([{" or unicodedata.category(ch) in (
        "Pd", "Po", "Ps", "Pi", "Pf")


def _ok_after(ch):
    # what docutils accepts right after an inline end-string
    return ch.isspace() or ch in "-.,:;!?\\/'\")]}>" or unicodedata.category(ch) in (
        "Pd", "Po", "Pe", "Pi", "Pf")


def _escape(text):
    text = text.replace("\\", "\\\\")
    for ch in "*`|":
        text = text.replace(ch, "\\" + ch)
    return re.sub(r"(?<=\w)_(?=\W|$)", r"\\_", text)


def _inline(text):
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(_escape(text[pos:m.start()]))
        kind, raw = m.lastgroup, m.group()
        if kind == "code":
            rst = f"``{raw[1:-1]}``"
        elif kind == "math":
            rst = f":math:`{raw[1:-1]}`"
        elif kind == "link":
            label, url = re.match(r"\[([^\]]+)\]\(([^)]+)\)", raw).groups()
            rst = f"`{label} <{url}>`__"
        else:
            rst = raw
        before = "".join(out)[-1:] or " "
        after = text[m.end():m.end() + 1] or " "
        if not _ok_before(before):
            rst = "\\ " + rst
        if not _ok_after(after):
            rst += "\\ "
        out.append(rst)
        pos = m.end()
    out.append(_escape(text[pos:]))
    return "".join(out)


def _width(text):
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _indent(text, n):
    pad = " " * n
    return "\n".join(pad + line if line.strip() else "" for line in text.splitlines())


def markdown_to_rst(md):
    """Convert the markdown subset described in the module docstring to rst blocks."""
    lines = md.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            title = _inline(heading.group("title").strip())
            level = len(heading.group("level"))
            blocks.append(f"{title}\n{_UNDERLINE[level] * max(_width(title), 4)}")
            i += 1
        elif line.strip() == "$$":
            end = lines.index("$$", i + 1)
            blocks.append(".. math::\n\n" + _indent("\n".join(lines[i + 1:end]), 3))
            i = end + 1
        elif line.startswith("```"):
            lang = line[3:].strip() or "text"
            end = lines.index("```", i + 1)
            blocks.append(f".. code-block:: {lang}\n\n" + _indent("\n".join(lines[i + 1:end]), 3))
            i = end + 1
        elif _BULLET.match(line):
            items = []
            while i < len(lines) and lines[i].strip():
                m = _BULLET.match(lines[i])
                if m:
                    items.append([m.group("mark"), [m.group("text")]])
                else:
                    items[-1][1].append(lines[i].strip())
                i += 1
            out = []
            for mark, text in items:
                mark = "-" if mark in "-*" else mark
                body = _inline("\n".join(text))
                out.append(f"{mark} " + body.replace("\n", "\n" + " " * (len(mark) + 1)))
            blocks.append("\n".join(out))
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not (
                    _HEADING.match(lines[i]) or lines[i].strip() == "$$"
                    or lines[i].startswith("```")):
                para.append(lines[i].strip())
                i += 1
            blocks.append(_inline("\n".join(para)))
    return "\n\n".join(blocks)


def page(path, lang):
    """The rst page of one tutorial: its markdown as text, its code cells as code blocks."""
    _, cells = read_cells(path)
    name = os.path.splitext(os.path.basename(path))[0]
    src = f"tutorials/{lang}/{name}.py"
    parts = []
    for n, (kind, text) in enumerate(cells):
        if kind == "markdown":
            parts.append(markdown_to_rst(text))
            if n == 0:  # right after the title
                parts.append(".. note::\n\n" + _indent(
                    NOTE[lang].format(src=src, nb=f"{lang}/{name}.ipynb"), 3))
        elif text.strip():
            parts.append(".. code-block:: python\n\n" + _indent(text, 3))
    return "\n\n".join(parts) + "\n"


def sources(lang, root=TUTORIALS):
    folder = os.path.join(root, lang)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.endswith(".py") and not f.startswith("_"))


def write_pages(docs_source, root=TUTORIALS):
    """Write every tutorial page into ``docs_source/<lang>/_tutorials``; return their paths."""
    written = []
    for lang in LANGS:
        out = os.path.join(docs_source, lang, OUT_FOLDER)
        os.makedirs(out, exist_ok=True)
        _write_if_changed(os.path.join(out, ".gitignore"),
                          "# generated from tutorials/ by tutorials/_tools/tutorial_pages.py\n*\n")
        wanted = set()
        for path in sources(lang, root):
            name = os.path.splitext(os.path.basename(path))[0] + ".rst"
            wanted.add(name)
            _write_if_changed(os.path.join(out, name), page(path, lang))
            written.append(os.path.join(out, name))
        for stale in set(os.listdir(out)) - wanted - {".gitignore"}:
            if stale.endswith(".rst"):
                os.remove(os.path.join(out, stale))
    return written


def _write_if_changed(path, text):
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: tutorial_pages.py DOCS_SOURCE_DIR")
    write_pages(sys.argv[1])
