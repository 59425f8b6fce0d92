"""Position bucket tables: the spec's examples, and the golden checkpoint's stored buffers."""

from __future__ import annotations

import torch

from ofa_cn.model.positions import (decoder_image_position_table, image_bucket_table, image_position_ids,
                                    num_image_buckets, token_bucket_table)


def test_token_buckets_examples():
    table = token_bucket_table(256, 1024)
    shift = 255
    for rel, bucket in [(0, 0), (1, 1), (128, 128), (129, 129), (130, 129), (200, 156), (500, 212), (1023, 255)]:
        assert int(table[rel, 0]) - shift == bucket, rel
        assert int(table[0, rel]) - shift == -bucket, rel
    assert int(table.min()) == 0 and int(table.max()) == 510


def test_image_buckets_examples():
    table = image_bucket_table(42)
    assert num_image_buckets(42) == 6892
    assert int(table[1, 2]) == 3443 and int(table[1, 43]) == 3361 and int(table[5, 5]) == 3444
    assert int(table[0, 7]) == 6889 and int(table[7, 0]) == 6890 and int(table[0, 0]) == 6891


def test_image_position_ids_row_major():
    assert image_position_ids(2, 3, 42).tolist() == [1, 2, 3, 43, 44, 45]


def test_tables_equal_golden_buffers(golden_checkpoint):
    sd = torch.load(golden_checkpoint, map_location="cpu", weights_only=False)["model"]
    assert torch.equal(sd["encoder.token_rp_bucket"], token_bucket_table(256, 1024))
    assert torch.equal(sd["decoder.token_rp_bucket"], token_bucket_table(256, 1024))
    assert torch.equal(sd["encoder.image_rp_bucket"], image_bucket_table(42))
    assert torch.equal(sd["decoder.image_position_idx"], decoder_image_position_table(128, 42))
