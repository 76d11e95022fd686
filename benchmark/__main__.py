"""``python -m benchmark``: the ``ldct-bench`` command (:mod:`benchmark.entry`)."""

from benchmark.entry import main

main()
