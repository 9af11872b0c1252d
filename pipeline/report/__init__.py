"""Model cards, the zoo index and the accuracy-vs-footprint plots, generated from one run's metrics.

``collect`` reads params + metrics + variant files into one typed record per model (``records``); ``card``,
``index`` and ``plots`` only render that record. Rendering never computes a figure of its own, so
every number a card shows can be traced to a metrics file of the same ``dvc repro``; a figure the
run did not produce is written "not measured", never guessed.
"""

from __future__ import annotations

NOT_MEASURED = "not measured"
