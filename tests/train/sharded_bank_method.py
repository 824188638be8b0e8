"""A test-only method whose aux state holds a bank sharded over the 'data' mesh axis.

DINO's loss plus a term that reads the whole bank, and a FIFO of whole batches written with
`jax.shard_map`: each device writes the rows of its own images into its own slice (no
all-gather). The bank is (slots, batch, D) with the batch axis split over 'data', so image i
of a step lands in the same global row on any number of devices (mesh-independent layout).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from dense_jax.methods import dino
from dense_jax.models.build import backbone

heads = dino.heads


def init_aux(config, rng):
    bank = jnp.zeros((config.bank.slots, config.data.batch_size, config.model.embed_dim), jnp.float32)
    return {
        **dino.init_aux(config, rng),
        "bank": nn.LogicallyPartitioned(bank, names=(None, "batch", None)),
        "bank_ptr": jnp.zeros((), jnp.int32),
        "bank_fill": jnp.zeros((), jnp.int32),
    }


def write(bank, keys, ptr, mesh):
    """bank[ptr] = keys, each device writing its own batch rows."""

    def local(bank_blk, keys_blk, ptr):
        return jax.lax.dynamic_update_slice(bank_blk, keys_blk[None], (ptr, 0, 0))

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(None, "data", None), P("data", None), P()),
        out_specs=P(None, "data", None),
    )(bank, keys, ptr)


def loss(params, teacher, aux, batch, ctx):
    value, (metrics, dino_aux) = dino.loss(params, teacher, {"center": aux["center"]}, batch, ctx)
    vit = backbone(ctx.config.model)
    view = batch["global"][:, 0]
    keys = jax.lax.stop_gradient(vit.apply({"params": teacher["backbone"]}, view)["cls"])
    query = vit.apply({"params": params["backbone"]}, view)["cls"]
    rows = aux["bank"].reshape(-1, aux["bank"].shape[-1])
    filled = (jnp.arange(aux["bank"].shape[0]) < aux["bank_fill"]).repeat(aux["bank"].shape[1])
    sims = jnp.where(filled[None], query @ rows.T, -1e9)
    bank_term = jnp.where(aux["bank_fill"] > 0, jax.nn.logsumexp(sims, axis=1).mean(), 0.0)
    slots = aux["bank"].shape[0]
    new_aux = {
        **dino_aux,
        "bank": write(aux["bank"], keys, aux["bank_ptr"], ctx.mesh),
        "bank_ptr": (aux["bank_ptr"] + 1) % slots,
        "bank_fill": jnp.minimum(aux["bank_fill"] + 1, slots),
    }
    total = value + ctx.config.bank.weight * bank_term
    return total, ({**metrics, "bank_term": bank_term}, new_aux)
