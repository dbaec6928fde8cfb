"""The paper's Table 1 (§6.4) on the synthetic benchmark: five cells, static vs moving actors.

Run ``.venv/bin/python -m benchmarks.table1 --help``; `plan.py` holds the sizes,
`runner.py` the steps, `report.py` the tables and the chart.
"""
