"""Reading finished stores: summaries (``fedimage inspect``), heterogeneity measures and the HTML
report (``fedimage report``), and re-partitioning a store's images without their pixels.

Modules: :mod:`~fedimage.analysis.summary`, :mod:`~fedimage.analysis.heterogeneity`,
:mod:`~fedimage.analysis.report` (with :mod:`~fedimage.analysis.plots` and
:mod:`~fedimage.analysis.report_html`), :mod:`~fedimage.analysis.repartition`.
"""
