"""Tiny datasets for the training tests: items of the batch contract with ids and task labels."""

import socket

import numpy as np
import torch

from tests.policy.helpers import make_batch


class ItemList(torch.utils.data.Dataset):
    """``n`` items from ``make_batch``; each carries its index as ``item_id``. ``poison`` items get
    huge actions, which make the loss infinite."""

    def __init__(self, n=6, poison=(), seed=0):
        batch = make_batch(n, seed=seed)
        self.items = [{k: v[i] for k, v in batch.items()} for i in range(n)]
        for i, item in enumerate(self.items):
            item["item_id"] = i
            if i in set(poison):
                item["actions"] = torch.full_like(item["actions"], 1e30)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class TaskItems(ItemList):
    """Items labelled with tasks (one name per item), for mixture sampling."""

    def __init__(self, tasks, **kwargs):
        super().__init__(len(tasks), **kwargs)
        self.tasks = list(tasks)

    def item_tasks(self):
        names = sorted(set(self.tasks), key=self.tasks.index)
        return names, np.asarray([names.index(t) for t in self.tasks])


def weights(policy):
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a if a[k].numel())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
