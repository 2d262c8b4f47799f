"""The growing KV cache: the same tensors as transformers' DynamicLayer, without copying the cache per token."""

import copy

import torch
from transformers.cache_utils import DynamicLayer

from recursa.models.kv_cache import MIN_HEADROOM, GrowingLayer, new_cache


def kv(batch: int, t: int, fill: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if fill is not None:
        return torch.full((batch, 2, t, 4), fill), torch.full((batch, 2, t, 4), fill)
    return torch.randn(batch, 2, t, 4), torch.randn(batch, 2, t, 4)


def test_appends_match_dynamic_layer_and_reallocate_only_when_full():
    growing, dynamic = GrowingLayer(), DynamicLayer()
    buffers = set()
    for t in (5, 1, 1, 300, 1):
        keys, values = kv(2, t)
        ours, theirs = growing.update(keys, values), dynamic.update(keys.clone(), values.clone())
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
        buffers.add(growing._keys.buffer.data_ptr())
    assert growing.get_seq_length() == 308
    assert len(buffers) == 2          # one buffer for the first 7 positions, one more when 300 arrived
    assert growing._keys.buffer.shape[-2] == 307 + MIN_HEADROOM   # room given when 300 arrived onto 7


def test_a_shallow_copy_never_writes_into_the_original():
    layer = GrowingLayer()
    layer.update(*kv(1, 10))
    twin = copy.copy(layer)
    twin.update(*kv(1, 1, fill=1.0))
    layer.update(*kv(1, 1, fill=0.0))
    assert twin.keys[..., -1, :].eq(1).all() and layer.keys[..., -1, :].eq(0).all()
    assert torch.equal(twin.keys[..., :10, :], layer.keys[..., :10, :])


def test_deep_copy_keeps_only_the_filled_positions_and_row_operations_still_work():
    layer = GrowingLayer()
    layer.update(*kv(3, 20))
    deep = copy.deepcopy(layer)
    assert deep._keys.buffer.shape[-2] == 20 and torch.equal(deep.keys, layer.keys)
    kept = layer.keys[2:3].clone()
    layer.batch_select_indices(torch.tensor([2]))
    assert torch.equal(layer.keys, kept)
    layer.crop(-5)
    layer.update(*kv(1, 2))
    assert layer.get_seq_length() == 17 and torch.equal(layer.keys[..., :15, :], kept[..., :15, :])


def test_new_cache_uses_growing_layers_for_full_attention():
    from transformers import Qwen2Config

    config = Qwen2Config(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=100)
    assert all(isinstance(layer, GrowingLayer) for layer in new_cache(config).layers)
