"""Runs the DuckDB queries of docs/analytics.md over an export directory, for tests/e2e/analytics.rs.

Reads a JSON list of [name, sql] from stdin; runs every statement in the export directory
(argv[1]), as an analyst would after `cd DIR && duckdb`; prints {name: rows} as JSON, each row a
list, dates and times as ISO text.
"""

import json
import os
import sys

import duckdb

os.chdir(sys.argv[1])
connection = duckdb.connect()
answers = {}
for name, sql in json.load(sys.stdin):
    rows = []
    for statement in [part for part in sql.split(";") if part.strip()]:
        rows = connection.execute(statement).fetchall()
    answers[name] = [list(row) for row in rows]
print(json.dumps(answers, default=str))
