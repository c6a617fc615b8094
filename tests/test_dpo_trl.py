"""DPO against trl's own DPOTrainer on a tiny model with SmolLM2's tokenizer and template.

The same base (our HF export) and the same LoRA adapter (random B, so the policy is not
the reference; exported with write_peft) on both sides: llmhood's Objective (stage dpo) on
the rows dpo_pairs reads, and trl's DPOTrainer built on a datasets.Dataset of the same
rows, one batch from its own dataloader through its own compute_loss, its reference the
adapter-free model (a new adapter: peft_config, then our tensors loaded into it). Both
tokenize the rows into the same ids; they differ in one detail of the completion mask:
trl trains the template's "\\n" after <|im_end|> too (everything after the prompt),
llmhood stops at the end-of-turn token (the separator is not the model's to say). Each is
compared on the other's mask: trl's batch with llmhood's mask, and llmhood's Objective
on trl's ids and full completion mask.

Label smoothing: trl 1.16's "sigmoid" loss ignores label_smoothing (only robust, aot and
exo use it). llmhood's smoothed loss is conservative DPO, −(1 − ε)·log σ(βh) − ε·log σ(−βh);
trl computes exactly that as its losses "sigmoid" weighted 2(1 − ε) plus "robust"
(= (−(1 − ε)·log σ(βh) + ε·log σ(−βh)) / (1 − 2ε)) weighted −(1 − 2ε).

Tolerances: the loss to 1e-5 relative, the LoRA gradients to 3e-5 of their largest entry.
Two float32 implementations of the same model (transformers' sdpa attention and fused
log-prob head against ours) give sequence log-probs of ~100 nats that differ by ~1e-5;
h is a difference of four of them, and the losses (~1.5, β = 0.5) agree to ~1e-6 relative,
the gradients to ~1.5e-6 of their largest entry. One token more per answer in the mask
(trl's "\\n") moves the loss by 1e-3; label smoothing dropped, by 0.1; a reference with the
adapter on, to ln 2; a misplaced q/k row of a LoRA B moves gradients by O(1).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import smollm2_tokenizer, write_tiny_base

from llmhood.model import ModelConfig, Transformer
from llmhood.speed.modes import REFERENCE, build
from llmhood.train import trainer as trainer_module
from llmhood.train.adapter import peft_key, read_adapter, save_adapter, write_peft
from llmhood.train.batches import MicroBatch, padded
from llmhood.train.config import TrainConfig
from llmhood.train.dataset import dpo_pairs
from llmhood.train.lora import LoraConfig, adapted_layers, apply_lora
from llmhood.train.loss import sequence_logprob
from llmhood.train.trainer import Objective

trl = pytest.importorskip("trl")
peft = pytest.importorskip("peft")
datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")
# trl passes transformers' renamed gradient_checkpointing arguments on: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")

BETA = 0.5
LORA = LoraConfig(rank=4, alpha=8, dropout=0.0, target=["all-linear"])
ROWS = [
    {"prompt": [{"role": "user", "content": "What is 2 + 2?"}],
     "chosen": [{"role": "assistant", "content": "2 + 2 = 4."}],
     "rejected": [{"role": "assistant", "content": "5, I think."}]},
    {"prompt": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"}],
     "chosen": [{"role": "assistant", "content": "Paris."}],
     "rejected": [{"role": "assistant", "content": "It might be Lyon, or maybe Marseille."}]},
    {"prompt": [{"role": "user", "content": "Say hi."},
                {"role": "assistant", "content": "Hi!"},
                {"role": "user", "content": "你是谁？"}],
     "chosen": [{"role": "assistant", "content": "我是 Hoodie。"}],
     "rejected": [{"role": "assistant", "content": "No."}]},
]  # fmt: skip


@pytest.fixture(scope="module")
def setup(smollm2_gguf, tmp_path_factory):
    """The HF base, its tokenizer, the rows as llmhood reads them, and a random adapter in
    both layouts."""
    folder = tmp_path_factory.mktemp("dpo-trl")
    tokenizer = smollm2_tokenizer(smollm2_gguf)
    base = write_tiny_base(folder / "base", tokenizer)
    data = folder / "rows.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), "utf-8")
    pairs, report = dpo_pairs(data, tokenizer, strict=True)
    assert len(pairs) == len(ROWS) and not report.dropped
    pristine = base_model(base)
    model = copy.deepcopy(pristine)
    assert model.config.rope_style == "half"  # an HF base: q/k rows as peft's, no permutation
    apply_lora(model, LORA)
    torch.manual_seed(1)
    with torch.no_grad():
        for _, layer in adapted_layers(model):
            layer.lora_B.normal_(0, 0.5)
    ours = save_adapter(model, folder / "adapter", LORA, str(base), stage="dpo")
    theirs = write_peft(read_adapter(ours), model.config, folder / "peft", str(base))
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    return dict(base=base, pristine=pristine, tokenizer=tokenizer, pairs=pairs, adapter=ours,
                peft=theirs, pad=pad)  # fmt: skip


def base_model(base: Path) -> Transformer:
    return build(base, REFERENCE, False, keep=False, decode_step=False)[0]


def policy(setup, adapter: Path | None) -> Transformer:
    """Our base with the adapter on (random B), or a fresh one (B = 0)."""
    model = copy.deepcopy(setup["pristine"])
    apply_lora(model, LORA)
    if adapter is not None:
        tensors = read_adapter(adapter).for_model(model.config)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, t in tensors.items():
                params[name].copy_(t)
    return model


def dpo_config(smoothing: float) -> TrainConfig:
    return TrainConfig(stage="dpo", method="lora", rank=LORA.rank, alpha=LORA.alpha, dropout=0.0,
                       dtype="float32", beta=BETA, label_smoothing=smoothing)  # fmt: skip


def objective_loss(model: Transformer, batch: MicroBatch, smoothing: float):
    """llmhood's per-pair mean DPO loss of one micro-batch, backpropagated: (loss, grads)."""
    model.zero_grad(set_to_none=True)
    total, n = Objective(model, "dpo", dpo_config(smoothing))(batch)
    loss = total / n
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def trl_trainer(setup, smoothing: float, out: Path):
    """trl's DPOTrainer on transformers' model of our base, with our adapter put on the new
    peft adapter it makes (so its reference is the base with adapters disabled)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(setup["base"])
    model = transformers.LlamaForCausalLM.from_pretrained(setup["base"], dtype=torch.float32)
    lora = peft.LoraConfig.from_pretrained(setup["peft"])
    lora.inference_mode = False  # write_peft writes an inference adapter; this one trains
    if smoothing == 0:
        losses = dict(loss_type=["sigmoid"])
    else:  # conservative DPO from trl's own terms (its "sigmoid" ignores label_smoothing)
        losses = dict(loss_type=["sigmoid", "robust"],
                      loss_weights=[2 * (1 - smoothing), -(1 - 2 * smoothing)])  # fmt: skip
    args = trl.DPOConfig(
        output_dir=str(out), beta=BETA, label_smoothing=smoothing, **losses, report_to=[],
        use_cpu=True, bf16=False, gradient_checkpointing=False, precompute_ref_log_probs=False,
        per_device_train_batch_size=len(ROWS), max_length=None, dataloader_num_workers=0,
        disable_tqdm=True,
    )  # fmt: skip
    dpo = trl.DPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(ROWS),
                         processing_class=tokenizer, peft_config=lora)  # fmt: skip
    assert dpo.ref_model is None and "ref" not in dpo.model.peft_config  # adapters off = reference
    tensors = load_file(setup["peft"] / "adapter_model.safetensors")
    loaded = peft.set_peft_model_state_dict(dpo.model, tensors)
    assert not loaded.unexpected_keys
    params = dict(dpo.model.named_parameters())
    for key, t in tensors.items():
        assert torch.equal(params[trl_name(key)].detach(), t)  # every tensor really landed
    return dpo


def trl_name(key: str) -> str:
    """peft's file key -> its parameter name in the model: the adapter's name before .weight"""
    return key.removesuffix(".weight") + ".default.weight"


def trl_loss(dpo, batch: dict):
    dpo.model.zero_grad(set_to_none=True)
    dpo.model.train()
    loss = dpo.compute_loss(dpo.model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in dpo.model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def llmhood_order(setup, batch: dict) -> list[int]:
    """Which of our pairs each row of trl's (shuffled) batch is, by its chosen ids."""
    n = batch["input_ids"].shape[0] // 2
    real = zip(batch["input_ids"], batch["attention_mask"], strict=True)
    ids = [row[mask.bool()].tolist() for row, mask in real]
    chosen = [p.chosen.ids for p in setup["pairs"]]
    order = [chosen.index(ids[i]) for i in range(n)]
    assert sorted(order) == list(range(len(ROWS)))
    return order


def compare_grads(ours: dict, theirs: dict) -> float:
    """Worst gradient difference, relative to the largest entry; every LoRA tensor mapped."""
    assert len(ours) == len(theirs) == 2 * 7 * 2  # lora_A and lora_B of 7 layers × 2 blocks
    scale = max(g.abs().max().item() for g in ours.values())
    worst = 0.0
    for name, g in ours.items():
        other = theirs[trl_name(peft_key(name))]
        assert other.shape == g.shape, name
        worst = max(worst, (g - other).abs().max().item() / scale)
    return worst


@pytest.fixture(scope="module")
def trainers(setup, tmp_path_factory):
    """trl's trainer for a label smoothing, built once: (trainer, its first batch)."""
    made = {}

    def get(smoothing: float):
        if smoothing not in made:
            dpo = trl_trainer(setup, smoothing, tmp_path_factory.mktemp("trl"))
            made[smoothing] = dpo, next(iter(dpo.get_train_dataloader()))
        return made[smoothing]

    return get


def our_batch(setup, batch: dict) -> MicroBatch:
    """llmhood's micro-batch (dpo_pairs, padded) of the pairs in trl's batch, in its order."""
    pairs = [setup["pairs"][i] for i in llmhood_order(setup, batch)]
    return padded([p.chosen for p in pairs] + [p.rejected for p in pairs], setup["pad"])


def test_trl_tokenizes_the_rows_as_llmhood_does(setup, trainers):
    """The same ids and the same answer tokens, but for the "\n" after <|im_end|>."""
    _, batch = trainers(0.0)
    ours = our_batch(setup, batch)
    real = batch["attention_mask"].bool()  # both pad on the right
    assert ours.tokens.shape == batch["input_ids"].shape
    assert torch.equal(ours.tokens[real], batch["input_ids"][real])
    assert not ours.mask[~real].any()
    trl_mask = batch["completion_mask"].bool()
    assert not (ours.mask & ~trl_mask).any()  # ours ⊂ trl's
    extra = trl_mask & ~ours.mask
    assert extra.sum(1).tolist() == [1] * trl_mask.shape[0]  # one token more per answer:
    tok = setup["tokenizer"]
    rows, cols = extra.nonzero(as_tuple=True)
    before = batch["input_ids"][rows, cols - 1].tolist()
    assert before == [tok.token_to_id("<|im_end|>")] * len(rows)  # right after the end of turn,
    assert {tok.decode([t]) for t in batch["input_ids"][rows, cols].tolist()} == {"\n"}  # "\n"
    # and every answer is closed by that end-of-turn token, trained: no other EOS is added.
    for row, mask in zip(batch["input_ids"], ours.mask, strict=True):
        assert row[mask][-1].item() == tok.token_to_id("<|im_end|>")
        assert (row[mask] == tok.token_to_id("<|im_end|>")).sum() == 1


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_and_lora_gradients_match_trl(setup, trainers, smoothing):
    """llmhood's Objective on its own batch against trl's compute_loss on trl's batch given
    llmhood's completion mask."""
    dpo, batch = trainers(smoothing)
    ours_batch = our_batch(setup, batch)
    aligned = {**batch, "completion_mask": ours_batch.mask.long()}
    theirs, theirs_grads = trl_loss(dpo, aligned)
    ours, ours_grads = objective_loss(policy(setup, setup["adapter"]), ours_batch, smoothing)
    assert abs(ours.item() - math.log(2)) > 0.1  # the policy really is not the reference
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert compare_grads(ours_grads, theirs_grads) < 3e-5


def test_llmhood_on_trls_own_batch_matches_trl(setup, trainers):
    """The other way round: trl's batch as it is (its ids, its completion mask with the
    "\n"), fed to llmhood's Objective."""
    dpo, batch = trainers(0.0)
    theirs, theirs_grads = trl_loss(dpo, batch)
    mask = batch["completion_mask"].bool()
    trl_batch = MicroBatch(batch["input_ids"], mask, real=int(batch["attention_mask"].sum()))
    ours, ours_grads = objective_loss(policy(setup, setup["adapter"]), trl_batch, 0.0)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert compare_grads(ours_grads, theirs_grads) < 3e-5
    ours_own, _ = objective_loss(policy(setup, setup["adapter"]), our_batch(setup, batch), 0.0)
    assert abs(ours_own.item() - ours.item()) > 5e-4  # the "\n" token does count


class Spy:
    """What the Objective does in one micro-batch: its forwards (with gradients? adapters
    on?) and what it hands to dpo_loss."""

    def __init__(self, model: Transformer, monkeypatch) -> None:
        self.forwards: list[tuple[bool, bool]] = []
        self.logps: list[torch.Tensor] = []
        self.with_grad: list[bool] = []
        adapters = [a for _, a in adapted_layers(model)]

        def record(module, args):
            states = {a.enabled for a in adapters}
            assert len(states) == 1, "some adapters on, some off"
            self.forwards.append((torch.is_grad_enabled(), states.pop()))

        model.register_forward_pre_hook(record)  # the model is the test's own
        real = trainer_module.dpo_loss

        def dpo_loss(*args, **kwargs):
            self.logps = [a.detach().clone() for a in args[:4]]
            self.with_grad = [a.requires_grad for a in args[:4]]
            return real(*args, **kwargs)

        monkeypatch.setattr(trainer_module, "dpo_loss", dpo_loss)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_loss_is_exactly_log_2_when_b_is_zero(setup, monkeypatch, smoothing):
    model = policy(setup, None)  # B = 0: the policy is the reference
    spy = Spy(model, monkeypatch)
    pairs = setup["pairs"]
    batch = padded([p.chosen for p in pairs] + [p.rejected for p in pairs], setup["pad"])
    loss, grads = objective_loss(model, batch, smoothing)
    policy_c, policy_r, ref_c, ref_r = spy.logps
    assert torch.equal(policy_c, ref_c) and torch.equal(policy_r, ref_r)  # bit for bit
    assert loss.item() == pytest.approx(math.log(2), abs=2**-24)  # float32's ln 2, to 1 ulp
    assert loss.dtype == torch.float32
    # dloss/dh = −β(1 − 2ε)/2 ≠ 0: B learns; A's gradient is B·(...) = 0 exactly.
    assert all(g.abs().sum() > 0 for n, g in grads.items() if n.endswith("lora_B"))
    assert all(torch.count_nonzero(g) == 0 for n, g in grads.items() if n.endswith("lora_A"))


def test_the_reference_is_the_base_once_per_micro_batch_without_a_copy(setup, monkeypatch):
    model = policy(setup, setup["adapter"])
    objective = Objective(model, "dpo", dpo_config(0.0))
    assert objective.reference is None  # LoRA: no frozen copy
    assert sum(isinstance(m, Transformer) for m in objective.modules()) == 1
    n_params = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in objective.parameters()) == n_params
    spy = Spy(model, monkeypatch)
    pairs = setup["pairs"]
    batch = padded([p.chosen for p in pairs] + [p.rejected for p in pairs], setup["pad"])
    _, n = objective(batch)
    # Two forwards of the whole micro-batch: the policy with gradients and adapters on, then
    # the reference once, without gradients, every adapter off; and the adapters back on.
    assert spy.forwards == [(True, True), (False, False)]
    assert all(a.enabled for _, a in adapted_layers(model))
    policy_c, policy_r, ref_c, ref_r = spy.logps
    assert spy.with_grad == [True, True, False, False] and n == len(ROWS)
    # The reference is the adapter-free model: a base loaded on its own gives its log-probs.
    with torch.no_grad():
        plain = sequence_logprob(base_model(setup["base"]), batch.tokens, batch.mask)
    assert torch.equal(torch.cat([ref_c, ref_r]), plain)  # bit for bit
    assert (torch.cat([policy_c, policy_r]) - plain).abs().min() > 1e-2  # the policy differs
    # Only full fine-tuning, whose policy has no adapter to switch off, keeps a frozen copy.
    full_config = replace(dpo_config(0.0), method="full")
    full = Objective(copy.deepcopy(setup["pristine"]), "dpo", full_config)
    assert full.reference is not None and full.reference is not full.model


def test_a_full_fine_tuning_reference_stays_the_initial_model():
    """Full fine-tuning has no adapter to switch off; its reference is a frozen copy, which
    must not move when the policy does, activation checkpointing (the default) or not."""
    torch.manual_seed(0)
    config = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=60,
                         hidden_dim=64, max_seq_len=32)  # fmt: skip
    model = Transformer(config)
    initial = copy.deepcopy(model)
    for block in model.layers:
        trainer_module._checkpointed(block)  # as prepare_model does with grad_checkpointing
    objective = Objective(model, "dpo", replace(dpo_config(0.0), method="full"))
    with torch.no_grad():
        for p in model.layers.parameters():  # a training step moves the policy
            p.add_(0.05 * torch.randn_like(p))
    tokens = torch.randint(0, 60, (4, 10))
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[:, 5:] = True
    with torch.no_grad():
        reference = sequence_logprob(objective.reference, tokens, mask)
        want = sequence_logprob(initial, tokens, mask)
    torch.testing.assert_close(reference, want)
