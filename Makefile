# Developer tasks of spikecore.
#   make notebooks   turn the py:percent tutorials into Jupyter notebooks (needs jupytext):
#                    tutorials/{en,zh}/NN_name.py -> tutorials/_build/{en,zh}/NN_name.ipynb
#   make docs        build the bilingual documentation (sphinx-build -W) into docs/_build/html
#   make sanitize    the CPU kernels' tests on an ASan + UBSan build (tests/native/sanitize_cpu.sh)
#   make clean       remove the generated notebooks
# The notebooks are made without outputs; run them in Jupyter. They are not committed
# (tutorials/.gitignore).

PYTHON   ?= python3
JUPYTEXT ?= $(PYTHON) -m jupytext

TUTORIALS := $(wildcard tutorials/en/*.py tutorials/zh/*.py)
NOTEBOOKS := $(patsubst tutorials/%.py,tutorials/_build/%.ipynb,$(TUTORIALS))

.PHONY: help notebooks docs sanitize clean

help:
	@sed -n '2,6p' Makefile

notebooks: $(NOTEBOOKS)

tutorials/_build/%.ipynb: tutorials/%.py
	@mkdir -p $(dir $@)
	$(JUPYTEXT) --to ipynb --output $@ $<

docs:
	$(MAKE) -C docs html

sanitize:
	PYTHON=$(PYTHON) bash tests/native/sanitize_cpu.sh

clean:
	rm -rf tutorials/_build
