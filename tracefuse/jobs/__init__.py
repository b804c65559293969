"""CI validation jobs: recipes, the matrix runner, the export cache, the pytest plugin, the divergence finder.

`jobs/` sits beside `api.py` and `cli.py`: it wires the other packages together and may import all of
them; nothing else imports `jobs/`. The report writers (JUnit, HTML) live in `tracefuse.validation`,
which owns reports; they read the CI JSON report and import nothing from here.
"""

from __future__ import annotations
