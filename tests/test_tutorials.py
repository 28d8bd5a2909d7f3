"""The tutorials: each runs end to end in both languages, and the two languages cannot drift.

The tutorials in ``tutorials/{en,zh}/*.py`` are jupytext py:percent scripts. Here every one of
them runs as a script in a subprocess, in its fast mode (``SPIKECORE_TUTORIAL_FAST=1``) and
with the non-interactive matplotlib backend. The scripts assert their own results (hand-made
gradients equal autograd's, the network beats chance, the kernels equal the reference, the
distributed run agrees with one process) and print a ``CHECK ok: ...`` line after each group
of assertions; the test requires those lines and the figures.

The English and Chinese versions must have the same cells in the same order, the same code
once comments are removed and the same mathematics in their markdown: only prose and comments
are translated.
"""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from test_docs import extract_math, misplaced_markup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIALS = os.path.join(ROOT, "tutorials")
LANGS = ("en", "zh")

_spec = importlib.util.spec_from_file_location(
    "tutorial_pages", os.path.join(TUTORIALS, "_tools", "tutorial_pages.py"))
pages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pages)

# What each tutorial must print; every one also ends with "CHECK ok: tutorial NN finished".
MARKERS = {
    "01_lif_neuron": [
        "CHECK ok: kernel functions equal the hand-written neuron",
        "CHECK ok: LIFNode and MultiStepLIFNode equal the hand-written neuron",
        "CHECK ok: firing rates follow",
    ],
    "02_surrogate_gradients": [
        "CHECK ok: each surrogate derivative equals autograd's derivative of its primitive",
        "CHECK ok: LIFNode's gradient is the surrogate derivative",
        "CHECK ok: a moderate alpha learns faster",
    ],
    "03_bptt_by_hand": [
        "CHECK ok: LIF_backward equals the three backward equations",
        "CHECK ok: LIF_hard_reset_fptt_with_grad + LIF_bptt equal the step-by-step loop",
        "CHECK ok: hand-computed BPTT gradients equal torch.autograd's",
        "CHECK ok: MultiStepLIFNode's backward equals LIF_bptt",
        "CHECK ok: all eight reset/detach variants match autograd",
    ],
    "04_first_network": [
        "CHECK ok: hand-written loop reaches test accuracy",
        "CHECK ok: spikecore.checkpoint gives the gradients of the plain run, bit for bit",
        "CHECK ok: spikecore.train.fit reaches test accuracy",
    ],
    "05_speed": [
        "CHECK ok: the kernels equal the reference backend",
    ],
    "06_distributed": [
        "CHECK ok: two gloo processes with DDP take the same steps as one process",
        "CHECK ok: torchrun with 2 gloo workers finished",
    ],
}
NAMES = sorted(MARKERS)
_INLINE_MATH = re.compile(r"\$\$(.+?)\$\$|\$([^$]+)\$", re.S)
_CJK = re.compile("[\u4e00-\u9fff]")


def _source(lang, name):
    return os.path.join(TUTORIALS, lang, name + ".py")


def _cells(lang, name):
    return pages.read_cells(_source(lang, name))[1]


def _math(markdown):
    return [" ".join((a or b).split()) for a, b in _INLINE_MATH.findall(markdown)]


# --- both languages, same code ---------------------------------------------------------------
def test_every_tutorial_exists_in_both_languages_and_is_tested():
    for lang in LANGS:
        found = sorted(os.path.splitext(os.path.basename(p))[0] for p in pages.sources(lang))
        assert found == NAMES, (f"tutorials/{lang} holds {found}; expected {NAMES} (add a new "
                                "tutorial in both languages and list its checks in MARKERS)")


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", NAMES)
def test_source_is_jupytext_percent(lang, name):
    header, cells = pages.read_cells(_source(lang, name))
    assert "format_name: percent" in header and "kernelspec:" in header, (
        f"{lang}/{name}.py lacks the jupytext py:percent header")
    assert cells and cells[0][0] == "markdown" and cells[0][1].startswith("# "), (
        f"{lang}/{name}.py must start with a markdown cell holding its '# title'")


@pytest.mark.parametrize("name", NAMES)
def test_languages_share_code_and_math(name):
    en, zh = _cells("en", name), _cells("zh", name)
    assert [k for k, _ in en] == [k for k, _ in zh], (
        f"{name}: the cells differ in kind or number between en and zh")
    for n, ((kind, a), (_, b)) in enumerate(zip(en, zh)):
        if kind == "code":
            ca, cb = pages.code_without_comments(a), pages.code_without_comments(b)
            assert ca == cb, (f"{name}: code cell {n} differs between en and zh (only comments "
                              f"may differ)\n--- en\n{ca}\n--- zh\n{cb}")
        else:
            assert _math(a) == _math(b), f"{name}: markdown cell {n} has different math"
            assert not _CJK.search(a), f"{name}: en markdown cell {n} contains Chinese text"
            assert _CJK.search(b), f"{name}: zh markdown cell {n} is not translated"


# --- the documentation pages made from them ---------------------------------------------------
def test_doc_pages_are_twins_with_the_same_math(tmp_path):
    written = pages.write_pages(str(tmp_path))
    assert len(written) == 2 * len(NAMES)
    for name in NAMES:
        texts = {lang: (tmp_path / lang / pages.OUT_FOLDER / f"{name}.rst").read_text("utf-8")
                 for lang in LANGS}
        en_math, zh_math = extract_math(texts["en"])[0], extract_math(texts["zh"])[0]
        assert en_math == zh_math, f"{name}: the generated pages carry different math"
        for lang, text in texts.items():
            assert misplaced_markup(text) == [], f"{lang}/{name}: glued inline markup"
            assert "``python tutorials/" in text


def test_markdown_conversion():
    rst = pages.markdown_to_rst("# T\n\nUse `x` and $a_t$ in **bold**.\n\n- one\n  two\n- 三\n\n"
                                "$$\nx = 1\n$$\n\n调用`f`函数，$x$（见上）")
    assert rst == ("T\n====\n\nUse ``x`` and :math:`a_t` in **bold**.\n\n- one\n  two\n- 三\n\n"
                   ".. math::\n\n   x = 1\n\n调用\\ ``f``\\ 函数，:math:`x`\\ （见上）")
    assert pages.code_without_comments("a = 1  # one\n# alone\n\nb = '# kept'\n") == (
        "a = 1\nb = '# kept'")


def test_notebooks_convert():
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    for lang in LANGS:
        for name in NAMES:
            nb = jupytext.read(_source(lang, name))
            nbformat.validate(nb)
            kinds = [c.cell_type for c in nb.cells]
            assert kinds == [k for k, _ in _cells(lang, name)], f"{lang}/{name}"


# --- running them ----------------------------------------------------------------------------
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", NAMES)
def test_tutorial_runs(lang, name, tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    env = dict(os.environ, SPIKECORE_TUTORIAL_FAST="1", MPLBACKEND="Agg",
               SPIKECORE_TUTORIAL_FIGDIR=str(figures), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, _source(lang, name)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, f"{lang}/{name} failed:\n{out[-3000:]}\n{proc.stderr[-5000:]}"
    for marker in MARKERS[name]:
        assert marker in out, f"{lang}/{name}: missing {marker!r} in\n{out[-3000:]}"
    checks = [line for line in out.splitlines() if line.startswith("CHECK ok:")]
    assert checks[-1] == f"CHECK ok: tutorial {name[:2]} finished", checks
    if name == "04_first_network":
        for acc in re.findall(r"reaches test accuracy ([\d.]+)%", out):
            assert float(acc) >= 60.0, f"{lang}/{name}: test accuracy {acc}% (chance is 10%)"
    assert list(figures.glob(f"{name[:2]}_*.png")), f"{lang}/{name} drew no figure"
