"""Sphinx configuration of the spikecore documentation (twin English and Chinese trees)."""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
# autodoc imports spikecore; prefer the source tree (an editable install points there anyway).
sys.path.insert(0, ROOT)

import spikecore  # noqa: E402

project = "spikecore"
author = "the spikecore developers"
copyright = "the spikecore developers"
release = spikecore.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_scripts", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["lang-switch.css"]

# English is the build language; the Chinese pages are ordinary pages of the same project.
language = "en"

html_theme = "furo"
html_title = f"spikecore {release}"

# Numbered equations: `.. math::` with `:label:` gets a number, `:eq:` refers to it. Numbers are
# prefixed with the chapter number of the (numbered) derivation toctree of each language.
numfig = True
math_numfig = True
numfig_secnum_depth = 1
math_eqref_format = "({number})"

# Each automodule directive names its own options (members, order, inheritance).
autodoc_typehints = "description"
# The autograd Functions do not document forward/backward themselves; without this, autodoc
# would copy torch.autograd.Function's docstrings, whose :ref: targets live in PyTorch's docs.
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# A nitpicky build (-n) reports every cross-reference without a target. The docs are built
# without intersphinx (no network), so references to PyTorch and NumPy objects, mostly from type
# hints, cannot resolve; leave them out of that report so that the references into spikecore
# itself stand out. (Plain builds are not nitpicky and are unaffected.)
nitpick_ignore_regex = [(r"py:(class|func|meth|exc|data|mod)", r"(torch|numpy)(\..*)?")]


# --- figures: regenerated from the library's own code at every build -------------------------
def _make_figures():
    out = os.path.join(HERE, "_generated")
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    script = os.path.join(HERE, "_scripts", "plot_surrogates.py")
    subprocess.run([sys.executable, script, out], check=True, env=env)


_make_figures()


# --- tutorials: pages generated from the py:percent sources in tutorials/ (nothing executed) --
def _make_tutorials():
    script = os.path.join(ROOT, "tutorials", "_tools", "tutorial_pages.py")
    subprocess.run([sys.executable, script, HERE], check=True)


_make_tutorials()


# --- language switch: every en/<page> links to zh/<page> and back ----------------------------
LANGS = {"en": "English", "zh": "中文"}


def _twin(pagename):
    head, _, rest = pagename.partition("/")
    if head not in LANGS or not rest:
        return None, None
    other = "zh" if head == "en" else "en"
    return head, f"{other}/{rest}"


def _add_lang_switch(app, pagename, templatename, context, doctree):
    links = []
    lang, twin = _twin(pagename)
    if lang is not None and twin in app.env.found_docs:
        for code, name in LANGS.items():
            target = pagename if code == lang else twin
            links.append((name, context["pathto"](target), code == lang))
    elif pagename == root_doc:
        for code, name in LANGS.items():
            links.append((name, context["pathto"](f"{code}/index"), False))
    context["lang_links"] = links
    # numfig_format is global; give the figures of the Chinese pages a Chinese caption prefix.
    if lang == "zh" and "body" in context:
        context["body"] = context["body"].replace('<span class="caption-number">Fig. ',
                                                  '<span class="caption-number">图 ')


# --- equation and figure numbers: counted per language tree -----------------------------------
# Sphinx numbers equations and figures per chapter number, with one counter for the whole
# project. The English and Chinese trees both have chapters 1, 2, ..., so the Chinese equations
# would continue where the English ones stopped. Renumber each (language, kind, chapter) group
# from 1, keeping the order, so that twin pages show the same numbers.
def _number_per_language(app, env):
    groups = {}
    for docname, kinds in env.toc_fignumbers.items():
        lang = docname.partition("/")[0] if "/" in docname else ""
        for kind, numbers in kinds.items():
            for node_id, number in numbers.items():
                key = (lang, kind, tuple(number[:-1]))
                groups.setdefault(key, []).append((number[-1], docname, node_id))
    for (_, kind, chapter), entries in groups.items():
        for new, (_, docname, node_id) in enumerate(sorted(entries), 1):
            env.toc_fignumbers[docname][kind][node_id] = chapter + (new,)
    return []


# --- Chinese line breaks ----------------------------------------------------------------------
# A line break inside a paragraph becomes a space in HTML. Between two Chinese characters that
# space is wrong, so drop source line breaks that fall between two wide (CJK) characters.
_WIDE = "\u2e80-\u9fff\u3000-\u303f\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
_CJK_BREAK = re.compile(f"(?<=[{_WIDE}])\n(?=[{_WIDE}])")


def _join_cjk_lines(app, doctree):
    from docutils import nodes

    for text in list(doctree.findall(nodes.Text)):
        parent = text.parent
        if parent is None or isinstance(parent, (nodes.literal_block, nodes.math_block,
                                                 nodes.raw, nodes.math, nodes.literal)):
            continue
        joined = _CJK_BREAK.sub("", text)
        if joined != text:
            parent.replace(text, nodes.Text(joined))


def setup(app):
    app.connect("html-page-context", _add_lang_switch)
    app.connect("doctree-read", _join_cjk_lines)
    # after Sphinx's own numbering, which is connected with the default priority (500)
    app.connect("env-get-updated", _number_per_language, priority=900)
    return {"parallel_read_safe": True}
