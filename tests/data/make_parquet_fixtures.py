"""Writes the Parquet fixtures of tests/train/parquet_test.cpp with pyarrow (an independent
writer) and, beside each, what pyarrow reads back: <name>.meta.json (the footer: rows, row
groups, column chunks) and <name>.rows.json (the records). Run from the repository root:

    python tests/data/make_parquet_fixtures.py   # needs pyarrow

The outputs are committed; the tests read them and need no Python.
"""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parquet")


def records(n, salt):
    return [{"input": f"Q{i} is", "output": f" A{(i * 7 + salt) % 13}"} for i in range(n)]


def write(name, table, **kw):
    path = os.path.join(OUT, name + ".parquet")
    pq.write_table(table, path, **kw)
    f = pq.ParquetFile(path)
    md = f.metadata
    meta = {"num_rows": md.num_rows, "created_by": md.created_by, "row_groups": []}
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        cols = []
        for c in range(rg.num_columns):
            cc = rg.column(c)
            cols.append({
                "path": cc.path_in_schema,
                "physical_type": cc.physical_type,
                "codec": cc.compression,
                "num_values": cc.num_values,
                "data_page_offset": cc.data_page_offset,
                "dictionary_page_offset": cc.dictionary_page_offset if cc.has_dictionary_page else -1,
                "total_compressed_size": cc.total_compressed_size,
                "total_uncompressed_size": cc.total_uncompressed_size,
                "encodings": sorted(cc.encodings),
            })
        meta["row_groups"].append({"num_rows": rg.num_rows, "columns": cols})
    leaves = []
    for i in range(len(f.schema)):
        col = f.schema.column(i)
        leaves.append({"path": col.path, "physical_type": col.physical_type,
                       "max_definition_level": col.max_definition_level,
                       "max_repetition_level": col.max_repetition_level})
    meta["leaves"] = leaves
    with open(os.path.join(OUT, name + ".meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
        fh.write("\n")
    with open(os.path.join(OUT, name + ".rows.json"), "w") as fh:
        json.dump(f.read().to_pylist(), fh, indent=1)
        fh.write("\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    pairs = pa.Table.from_pylist(records(40, 0))
    # Every codec, dictionary pages (pyarrow's default) and plain ones, page v1 and v2.
    for codec in ["none", "snappy", "zstd", "gzip"]:
        write(f"pairs_{codec}", pairs, compression=codec, row_group_size=16)
    write("pairs_plain_v2", pairs, compression="snappy", use_dictionary=False, data_page_version="2.0",
          row_group_size=25)
    # Nulls: an optional column with missing values, and every scalar type the issue names.
    typed = pa.table({
        "text": pa.array(["alpha", None, "gamma", "", "epsilon " * 20, None, "zeta"], pa.string()),
        "n32": pa.array([1, -2, None, 4, 5, 6, 7], pa.int32()),
        "n64": pa.array([10, 20, 30, None, 50, 60, -(2**40)], pa.int64()),
        "flag": pa.array([True, False, None, True, True, False, True], pa.bool_()),
        "f": pa.array([0.5, None, -1.25, 3.0, 4.0, 5.5, 6.0], pa.float32()),
        "d": pa.array([1e300, 2.5, None, -0.0, 4.0, 5.0, 6.0], pa.float64()),
    })
    write("typed_nulls", typed, compression="zstd", row_group_size=4)
    # Chat data: messages, a list of {role, content} structs.
    chats = []
    for i in range(12):
        msgs = [{"role": "user", "content": f"What is {i} + {i}?"},
                {"role": "assistant", "content": f"{2 * i}"}]
        if i % 3 == 0:
            msgs = [{"role": "system", "content": "Be brief."}] + msgs
        chats.append({"messages": msgs})
    chats.append({"messages": []})
    write("messages", pa.Table.from_pylist(chats), compression="snappy", row_group_size=5)
    # Columns no record layout names (question / answer).
    qa = [{"question": f"Q{i} is", "answer": f" A{i % 5}"} for i in range(10)]
    write("qa", pa.Table.from_pylist(qa), compression="gzip")


if __name__ == "__main__":
    main()
