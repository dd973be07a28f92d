"""The report: a date's exported datasets as one self-contained HTML page with charts.

Altair builds the charts as Vega-Lite specs and vl-convert renders them: SVG and PNG offline
(a native library with Vega inside, no browser and no network), and the Vega JavaScript bundle
that the page inlines for interactive charts (tooltips). Chosen over plotly because the page
stays readable without JavaScript and in print (every chart is also a static SVG, about 10 to
150 KB each, where plotly's inlined library alone is about 4.5 MB and renders nothing without
it), because static images need no headless browser (plotly's kaleido starts Chrome), and
because a Vega-Lite spec is plain JSON data whose figures tests can read back.

inputs.py reads the exported files through their manifests (never the database), charts.py
builds each figure and the table of exact numbers beside it, page.py writes the HTML and
render.py turns it all into the files of the dataset ``reports``.
"""
