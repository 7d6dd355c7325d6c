"""The shared-prefix helpers: the common prefix's length and the hooks that rule sharing out."""

import torch

from r1probe.models.prefix import expand_cache, hooked, shared_prefix, with_prefix_mask


def test_shared_prefix_length():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # every row keeps a token of its own
    assert shared_prefix([[7], [7, 8]]) == 0
    assert shared_prefix([]) == 0


def test_hooked_ignores_value_preserving_hooks(tiny_lm):
    model = tiny_lm.model
    assert not hooked(model)  # the loader's contiguous-input hook on lm_head changes no values

    def reader(m, a, o):
        return None

    reader.value_preserving = True
    h = model.model.layers[0].register_forward_hook(reader)
    assert not hooked(model)
    h.remove()
    h = model.model.layers[0].register_forward_hook(lambda m, a, o: None)
    assert hooked(model)
    h.remove()


def test_expand_cache_and_mask(tiny_lm):
    from transformers import DynamicCache

    cache = DynamicCache(config=tiny_lm.model.config)
    ids = torch.tensor([tiny_lm.chat.encode(tiny_lm.chat.format("hello"))[:4]])
    with torch.inference_mode():
        tiny_lm.model(input_ids=ids, cache=cache, use_cache=True)
    kv = [(layer.keys, layer.values) for layer in cache.layers]
    big = expand_cache(tiny_lm.model, kv, 3)
    assert all(layer.keys.shape[0] == 3 and torch.equal(layer.keys[2], k[0]) for layer, (k, _) in zip(big.layers, kv))
    m = with_prefix_mask(torch.tensor([[0, 1], [1, 1]]), 4)
    assert m.tolist() == [[1, 1, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1]]

