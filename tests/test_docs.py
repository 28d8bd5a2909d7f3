"""The documentation: twin English/Chinese pages that cannot drift apart, and a clean build.

The twin checks read the reStructuredText sources with regular expressions, so they need no
Sphinx. Every page of ``docs/source/en`` must exist in ``docs/source/zh`` (and the other way
round) and both must carry the same mathematics in the same order: the body of every
``.. math::`` directive and every inline ``:math:`` role, compared after collapsing whitespace.
``:label:`` lines are not part of the math (labels are global, so each language prefixes its
own), but the labels must match once the ``en-`` / ``zh-`` prefix is removed.
"""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "docs", "source")
LANGS = ("en", "zh")

_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<arg>.*)$")
_OPTION = re.compile(r"^\s*:(?P<name>[\w-]+):(?P<value>.*)$")
# :math:`...` as a role; rst allows no backtick inside the content.
_ROLE = re.compile(r":math:`(?P<body>[^`]*)`")
_EQREF = re.compile(r":eq:`(?P<label>[^`]*)`")


def _pages(lang):
    base = os.path.join(SOURCE, lang)
    found = set()
    for dirpath, _, files in os.walk(base):
        for name in files:
            if name.endswith((".rst", ".md")):
                found.add(os.path.relpath(os.path.join(dirpath, name), base))
    return found


def _norm(text):
    return " ".join(text.split())


def extract_math(text):
    """``(math, labels, eqrefs)`` of one rst page.

    ``math`` lists, in document order, ``("block", body)`` for every ``.. math::`` directive
    (its argument and indented content, options excluded) and ``("inline", body)`` for every
    ``:math:`` role outside those blocks; bodies are whitespace-normalised.
    """
    lines = text.splitlines()
    math, labels, prose = [], [], []

    def flush_prose():
        # Roles may wrap over lines, so search the prose between two blocks as one text.
        chunk = "\n".join(prose)
        math.extend(("inline", _norm(r.group("body"))) for r in _ROLE.finditer(chunk))
        prose.clear()

    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        flush_prose()
        indent = len(m.group("indent").expandtabs())
        body = [m.group("arg")]
        i += 1
        in_options = True
        while i < len(lines):
            line = lines[i]
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break  # dedent: the directive is over
            opt = _OPTION.match(line) if in_options and line.strip() else None
            if opt:
                if opt.group("name") == "label":
                    labels.append(opt.group("value").strip())
            else:
                if line.strip():
                    in_options = False
                body.append(line)
            i += 1
        math.append(("block", _norm("\n".join(body))))
    flush_prose()
    refs = [r.group("label") for r in _EQREF.finditer(text)]
    return math, labels, refs


# --- inline markup next to Chinese text -------------------------------------------------------
# reStructuredText recognises inline markup only when its start-string follows whitespace or
# certain punctuation and its end-string is followed by whitespace or certain punctuation. A
# Chinese character or a full-width opening bracket right after ``**粗体**`` or :math:`x` is
# neither, and docutils then silently swallows text up to the next backtick. Such places need an
# escaped space (``\ ``), which renders as nothing.
_CONSTRUCT = re.compile(r"``[^`]+``|(?::[\w:+-]+:)?`[^`]+`_{0,2}|\*\*[^*\n]+\*\*"
                        r"|(?<![*\w])\*[^*\s][^*\n]*?\*(?!\*)")
_BLOCK_DIRECTIVE = re.compile(r"^(\s*)\.\. (code-block|code|math|literalinclude)::")


def _load_tutorial_tool():
    spec = importlib.util.spec_from_file_location(
        "tutorial_pages", os.path.join(ROOT, "tutorials", "_tools", "tutorial_pages.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# what docutils accepts around inline markup: the same rules the tutorial page generator uses
_TOOL = _load_tutorial_tool()
_ok_before, _ok_after = _TOOL._ok_before, _TOOL._ok_after


def _prose(text):
    """The lines of a page outside code and math blocks, with their line numbers."""
    skip_indent = None
    for n, line in enumerate(text.splitlines(), 1):
        if skip_indent is not None:
            if not line.strip() or len(line) - len(line.lstrip()) > skip_indent:
                continue
            skip_indent = None
        m = _BLOCK_DIRECTIVE.match(line)
        if m:
            skip_indent = len(m.group(1))
            continue
        if line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
            skip_indent = len(line) - len(line.lstrip())
        yield n, line


def misplaced_markup(text):
    """``(line number, snippet)`` for inline markup that docutils will not recognise."""
    bad, para = [], []

    def check():
        # Markup may wrap over lines, so look at whole paragraphs.
        if not para:
            return
        first, chunk = para[0][0], "\n".join(line for _, line in para)
        for m in _CONSTRUCT.finditer(chunk):
            before = chunk[m.start() - 1] if m.start() > 0 else " "
            after = chunk[m.end()] if m.end() < len(chunk) else " "
            if not (_ok_before(before) and _ok_after(after)):
                line = first + chunk.count("\n", 0, m.start())
                bad.append((line, chunk[max(0, m.start() - 3):m.end() + 3]))
        para.clear()

    last = None
    for n, line in _prose(text):
        if not line.strip() or (last is not None and n != last + 1):
            check()
        if line.strip():
            para.append((n, line))
        last = n
    check()
    return bad


def _read(lang, page):
    with open(os.path.join(SOURCE, lang, page), encoding="utf-8") as f:
        return f.read()


def _strip(label, lang):
    prefix = lang + "-"
    assert label.startswith(prefix), f"{lang} label {label!r} must start with {prefix!r}"
    return label[len(prefix):]


def test_every_page_has_a_twin():
    en, zh = _pages("en"), _pages("zh")
    assert en, "docs/source/en is empty"
    assert en - zh == set(), f"English pages without a Chinese twin: {sorted(en - zh)}"
    assert zh - en == set(), f"Chinese pages without an English twin: {sorted(zh - en)}"


@pytest.mark.parametrize("page", sorted(_pages("en") & _pages("zh")))
def test_twins_carry_the_same_math(page):
    en_math, en_labels, en_refs = extract_math(_read("en", page))
    zh_math, zh_labels, zh_refs = extract_math(_read("zh", page))
    for n, (a, b) in enumerate(zip(en_math, zh_math)):
        assert a == b, (f"{page}: math item {n} differs\n  en: {a}\n  zh: {b}\n"
                        "(the same equations must appear in the same order in both languages)")
    assert len(en_math) == len(zh_math), (
        f"{page}: {len(en_math)} math items in en, {len(zh_math)} in zh; first extra: "
        f"{(en_math + zh_math)[min(len(en_math), len(zh_math))]}")
    assert [_strip(x, "en") for x in en_labels] == [_strip(x, "zh") for x in zh_labels], (
        f"{page}: equation labels differ between the languages")
    # Each language refers to its own equations only.
    for lang, refs in (("en", en_refs), ("zh", zh_refs)):
        for ref in refs:
            _strip(ref, lang)


@pytest.mark.parametrize("lang", LANGS)
def test_inline_markup_is_recognised(lang):
    bad = {page: misplaced_markup(_read(lang, page)) for page in sorted(_pages(lang))}
    bad = {page: hits for page, hits in bad.items() if hits}
    assert not bad, ("inline markup glued to text (add an escaped space '\\ '): "
                     + "; ".join(f"{lang}/{p}:{n}: {snip!r}" for p, hits in bad.items()
                                 for n, snip in hits))


def test_misplaced_markup_finds_glued_roles():
    assert misplaced_markup("阈值 :math:`V_{th}`（``v``）") == [(1, "阈值 :math:`V_{th}`（``")]
    assert misplaced_markup("阈值 :math:`V_{th}`\\ （``v``）") == []
    assert misplaced_markup("**硬重置**\\ （x）与 **软重置**。") == []
    assert misplaced_markup(".. math::\n\n   a**b``c\n") == []
    assert misplaced_markup("用 *网格跨步循环*（grid）") == [(1, "用 *网格跨步循环*（gr")]
    assert misplaced_markup("``[T, *]`` and *emphasis*, 2 * 3") == []


def test_labels_are_unique_per_language():
    for lang in LANGS:
        seen = {}
        for page in sorted(_pages(lang)):
            for label in extract_math(_read(lang, page))[1]:
                assert label not in seen, f"label {label!r} in {lang}/{page} and {seen[label]}"
                seen[label] = f"{lang}/{page}"


def test_extract_math_reads_blocks_roles_and_options():
    text = (
        "Intro :math:`a + b` and :math:`c\n  + d`.\n\n"
        ".. math::\n   :label: en-x\n   :nowrap:\n\n   x =\n     y\n\nAfter :math:`d`.\n"
        ".. math:: e = f\n\n"
    )
    math, labels, _ = extract_math(text)
    assert math == [("inline", "a + b"), ("inline", "c + d"), ("block", "x = y"),
                    ("inline", "d"), ("block", "e = f")]
    assert labels == ["en-x"]


@pytest.mark.skipif(importlib.util.find_spec("sphinx") is None,
                    reason="Sphinx is not installed; `pip install -r docs/requirements.txt` "
                           "to run the documentation build test")
def test_docs_build_without_warnings(tmp_path):
    cmd = [sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-q", "-b", "html",
           "-d", str(tmp_path / "doctrees"), SOURCE, str(tmp_path / "html")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"sphinx-build -W -n failed:\n{proc.stdout}\n{proc.stderr}"
    for lang in LANGS:
        for page in _pages(lang):
            html = tmp_path / "html" / lang / (os.path.splitext(page)[0] + ".html")
            assert html.is_file(), f"{html} was not built"
            text = html.read_text(encoding="utf-8")
            assert "lang-switch" in text, f"{lang}/{page} has no language switch"
            # Inline markup that docutils did not recognise shows up as raw backticks or
            # asterisks in the rendered prose (code blocks excluded).
            prose = re.sub(r"<pre>.*?</pre>|<script.*?</script>|<dt class=\"sig[^\"]*\".*?</dt>",
                           "", text, flags=re.S)
            prose = re.sub(r"<[^>]+>", "", prose)
            for raw in ("`", "**", ":math:", ":eq:"):
                assert raw not in prose, f"{lang}/{page}: unrendered markup {raw!r} in the HTML"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_thread_threshold_in_docs_matches_the_code(lang):
    """threads.rst quotes the size under which a CPU call runs on one thread; keep it true."""
    from spikecore import cpu_backend
    n = cpu_backend.PARALLEL_MIN_ELEMENTS
    text = _read(lang, "threads.rst")
    # "262144 (2^18)", or with the full-width brackets of the Chinese page
    assert re.search(rf"{n} ?[(（]2\^{n.bit_length() - 1}[)）]", text)
