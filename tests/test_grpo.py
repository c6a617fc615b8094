"""GRPO: advantages and the loss against closed forms (hand-computed values, the policy
gradient at ratio 1, clipping's stopped gradients, k3's expectation against the exact KL);
a rollout's tensors against a plain full forward and the base model; a tiny random Llama
with LoRA learning a rule-based reward; and the errors for bad rewards and settings."""

from __future__ import annotations

import copy
import math
import statistics

import pytest
import torch

from llmhood.errors import LLMHoodError
from llmhood.model import ModelConfig, Transformer
from llmhood.train.grpo import (
    GRPOConfig,
    Reward,
    group_advantages,
    grpo_loss,
    grpo_step,
    load_reward,
    render_prompts,
    rollout,
    token_logprobs,
)
from llmhood.train.lora import LoraConfig, apply_lora

PROMPTS = ["abc", "hgf", "dd", "eb"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small gain nothing from a second thread, and on a busy machine two
    threads waiting for each other make every small operation many times slower (the
    learning test: 2 s on one thread, 30 s on two while another process runs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LetterTokenizer:
    """Eight letters, one token each, and an end-of-sequence token: a random policy writes
    the target letter often enough (1 token in 9) for every group to carry a signal."""

    def __init__(self) -> None:
        self.letters = "abcdefgh"
        self.eos_id = len(self.letters)
        self.special_ids = {self.eos_id}

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        return [self.letters.index(c) for c in text]

    def decode_bytes(self, ids: list[int]) -> bytes:
        return "".join(self.letters[i] for i in ids if i != self.eos_id).encode()

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool) -> str:
        return "".join(m["content"] for m in messages) + ("h" if add_generation_prompt else "")


def share_of_a(prompts: list[str], completions: list[str]) -> list[float]:
    return [c.count("a") / len(c) if c else 0.0 for c in completions]


def tiny_policy(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    config = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=9,
                         hidden_dim=64, max_seq_len=64, tie_embeddings=False)  # fmt: skip
    return Transformer(config)


# ---- advantages --------------------------------------------------------------------------


def test_advantages_are_the_groups_standard_scores():
    rewards = [1.0, 0.0, 0.5, 0.25, 3.0, -1.0, 2.0, 2.0]
    got = group_advantages(torch.tensor(rewards), group=4)
    want = []
    for g in (rewards[:4], rewards[4:]):
        mean, std = statistics.mean(g), statistics.stdev(g)  # stdev: the n − 1 form
        want += [(r - mean) / (std + 1e-4) for r in g]
    # float32 arithmetic on numbers of order 1: a few units of float32 rounding.
    torch.testing.assert_close(got, torch.tensor(want), rtol=1e-6, atol=1e-6)


def test_a_flat_group_teaches_nothing():
    """All rewards equal: advantage exactly 0, even where the float32 mean of 0.1s is not
    0.1 and (r − mean) / eps would be rounding noise blown up."""
    got = group_advantages(torch.tensor([0.1] * 8 + [0.0, 1.0] * 4), group=8)
    assert torch.equal(got[:8], torch.zeros(8))
    assert got[8:].abs().min() > 0.9


# ---- the loss ----------------------------------------------------------------------------


def test_the_loss_equals_the_hand_computed_value():
    clip, beta = 0.2, 0.1
    mask = [[False, True, True, False], [False, False, True, True]]
    logp = [[0.0, -1.0, -2.0, 0.0], [0.0, 0.0, -0.5, -3.0]]
    old = [[0.0, -1.5, -1.9, 0.0], [0.0, 0.0, -0.2, -3.0]]
    ref = [[0.0, -1.2, -2.5, 0.0], [0.0, 0.0, -0.4, -2.0]]
    a = [0.7, -1.3]
    want = 0.0
    for i in range(2):
        terms = []
        for t in range(4):
            if not mask[i][t]:
                continue
            ratio = math.exp(logp[i][t] - old[i][t])
            clipped = min(max(ratio, 1 - clip), 1 + clip)
            d = ref[i][t] - logp[i][t]
            k3 = math.exp(d) - d - 1
            terms.append(min(ratio * a[i], clipped * a[i]) - beta * k3)
        want -= sum(terms) / len(terms) / 2
    tensors = [torch.tensor(x) for x in (logp, old, ref, a, mask)]
    out = grpo_loss(*tensors, clip, beta)
    assert out.loss.item() == pytest.approx(want, rel=1e-6)
    # Clipping stops two of the four tokens: ratio e^0.5 > 1.2 with A > 0 (row 0, token 1),
    # and e^-0.3 < 0.8 with A < 0 (row 1, token 2).
    assert out.clip_fraction == 2 / 4


def test_at_ratio_one_the_gradient_is_the_policy_gradient():
    """d loss / d log π_it = −A_i / (n·|o_i|): −A·∇log π, each completion's tokens averaged."""
    torch.manual_seed(0)
    mask = torch.tensor([[False, True, True, True], [False, False, True, False]])
    old = -torch.rand(2, 4)
    logp = old.clone().requires_grad_(True)
    a = torch.tensor([0.8, -1.1])
    grpo_loss(logp, old, None, a, mask, beta=0.0).loss.backward()
    want = torch.where(mask, -a[:, None] / (2 * mask.sum(1, keepdim=True)), 0.0)
    torch.testing.assert_close(logp.grad, want, rtol=1e-6, atol=0)


def test_a_models_gradient_is_the_policy_gradient_of_its_full_logits():
    """On a LoRA model: the gradient of the loss at ratio 1 equals that of
    −(1/n) Σ_i A_i/|o_i| Σ_t log softmax(logits/T), the log-probs read off full logits."""
    model = tiny_policy()
    apply_lora(model, LoraConfig(rank=4, alpha=8))
    tokens = torch.randint(0, 9, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[0, 3:], mask[1, 5:], mask[2, 2:6] = True, True, True
    a, temperature = torch.tensor([1.0, -0.5, 0.3]), 0.7
    with torch.no_grad():
        old = token_logprobs(model, tokens, mask, temperature)
    grpo_loss(token_logprobs(model, tokens, mask, temperature), old, None, a, mask,
              beta=0.0).loss.backward()  # fmt: skip
    b = model.layers[1].feed_forward.w2.lora_B
    got, b.grad = b.grad.clone(), None

    logp = (model(tokens) / temperature).log_softmax(-1)  # (n, T, V)
    picked = logp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]  # predicts token t + 1
    target = mask[:, 1:].float()
    (-(a * (picked * target).sum(1) / target.sum(1)).mean()).backward()
    # Two different summation orders of the same float32 terms.
    torch.testing.assert_close(got, b.grad, rtol=1e-5, atol=1e-7)
    assert got.abs().sum() > 0


@pytest.mark.parametrize(
    ("ratio", "advantage", "stopped"),
    [(1.5, 1.0, True), (0.5, -1.0, True), (1.5, -1.0, False), (0.5, 1.0, False),
     (1.1, 1.0, False), (0.9, -1.0, False)],
)  # fmt: skip
def test_clipping_stops_the_gradient_past_the_trust_region(ratio, advantage, stopped):
    """Outside [1 − ε, 1 + ε] in the advantage's direction the clipped term is constant;
    in the other direction the unclipped, smaller term stays: gradient −A·ratio."""
    old = torch.tensor([[0.0, -1.0]])
    logp = (old + torch.tensor([[0.0, math.log(ratio)]])).requires_grad_(True)
    mask = torch.tensor([[False, True]])
    out = grpo_loss(logp, old, None, torch.tensor([advantage]), mask, clip=0.2, beta=0.0)
    out.loss.backward()
    want = 0.0 if stopped else -advantage * ratio
    assert logp.grad[0, 1].item() == pytest.approx(want, rel=1e-6)
    assert out.clip_fraction == (1.0 if stopped else 0.0)


def test_kl_is_zero_when_the_policy_is_the_reference():
    logp = -torch.rand(2, 5)
    mask = torch.ones(2, 5, dtype=torch.bool)
    out = grpo_loss(logp, logp, logp, torch.tensor([1.0, -1.0]), mask, beta=0.5)
    assert out.kl.item() == 0.0
    assert out.loss.item() == 0.0  # ratio 1 and advantages summing to 0


def test_k3_averages_to_the_exact_kl_of_the_policy_from_the_reference():
    """One completion whose tokens occur as often as π gives them (π = 1/2, 1/4, 1/8, 1/8):
    its mean k3 is E_π[k3] exactly, which must be KL(π ‖ π_ref), not KL(π_ref ‖ π)."""
    pi, ref = torch.tensor([0.5, 0.25, 0.125, 0.125]), torch.tensor([0.05, 0.15, 0.3, 0.5])
    draws = torch.tensor([0, 0, 0, 0, 1, 1, 2, 3])
    logp, ref_logp = pi.log()[draws][None], ref.log()[draws][None]  # (1, 8)
    mask = torch.ones(1, 8, dtype=torch.bool)
    out = grpo_loss(logp, logp, ref_logp, torch.zeros(1), mask, beta=1.0)
    dist = torch.distributions
    want = dist.kl_divergence(dist.Categorical(pi), dist.Categorical(ref)).item()
    reverse = dist.kl_divergence(dist.Categorical(ref), dist.Categorical(pi)).item()
    assert abs(want - reverse) > 0.1
    assert out.kl.item() == pytest.approx(want, rel=1e-5)  # float32 logs and exps
    assert out.loss.item() == pytest.approx(want, rel=1e-5)


# ---- rollout and training ----------------------------------------------------------------


def test_a_rollout_records_what_was_sampled_and_its_log_probs():
    base = tiny_policy()
    model = copy.deepcopy(base)
    apply_lora(model, LoraConfig(rank=4, alpha=8))
    with torch.no_grad():  # a trained-looking policy, so that it differs from the base
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    config = GRPOConfig(group=4, max_new_tokens=6, temperature=0.7, seed=3)
    seen = {}

    def reward(prompts, completions):
        seen["prompts"] = prompts
        return share_of_a(prompts, completions)

    tok = LetterTokenizer()
    data = rollout(model, tok, PROMPTS[:2], reward, config, step=5)
    assert seen["prompts"] == ["abc"] * 4 + ["hgf"] * 4
    assert data.tokens.shape[0] == 8 and model.training  # the caller's mode is restored
    ends = 0
    for i, text in enumerate(data.completions):
        prompt = tok.encode(data.prompts[i])
        where = data.mask[i].nonzero()[:, 0]
        completion = data.tokens[i, where].tolist()
        # The mask is one run right after the prompt; the prompt and padding are outside.
        assert where.tolist() == list(range(len(prompt), len(prompt) + len(completion)))
        assert data.tokens[i, : len(prompt)].tolist() == prompt
        assert tok.decode_bytes(completion).decode() == text
        # The stop token is kept (the policy chose it), and only a full-length row lacks it.
        stopped = completion[-1] == tok.eos_id
        ends += stopped
        assert stopped or len(completion) == config.max_new_tokens
    assert 0 < ends < 8
    torch.testing.assert_close(data.rewards, torch.tensor(share_of_a([], data.completions)))
    torch.testing.assert_close(data.advantages, group_advantages(data.rewards, 4))

    # Log-probs of the sampled, tempered distribution, read off full logits; the reference
    # is the model before its adapters, the same numbers without a second copy in training.
    for net, got in [(model.eval(), data.old_logp), (base, data.ref_logp)]:
        with torch.no_grad():
            logp = (net(data.tokens) / 0.7).log_softmax(-1)
        picked = logp[:, :-1].gather(-1, data.tokens[:, 1:, None])[..., 0]
        want = torch.zeros_like(got)
        want[:, 1:] = torch.where(data.mask[:, 1:], picked, 0.0)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # float32, summed apart
    assert (data.old_logp - data.ref_logp).abs().max() > 0.01

    again = rollout(model, tok, PROMPTS[:2], reward, config, step=5)
    other = rollout(model, tok, PROMPTS[:2], reward, config, step=6)
    assert torch.equal(again.tokens, data.tokens)  # seeded by (seed, step)
    assert again.completions != other.completions


def test_grpo_raises_the_reward_of_a_tiny_llama():
    """Reward: the share of a completion's letters that are "a". A random policy writes
    one in 9 (about 0.1); 30 steps of GRPO with LoRA must raise it clearly, and the KL
    penalty must see the policy leave its reference."""
    model = tiny_policy()
    apply_lora(model, LoraConfig(rank=4, alpha=8))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    config = GRPOConfig(group=8, max_new_tokens=8, beta=0.04, seed=0)
    stats = [grpo_step(model, LetterTokenizer(), PROMPTS, share_of_a, optimizer, config, step=s)
             for s in range(30)]  # fmt: skip
    first = statistics.mean(s.reward for s in stats[:5])
    last = statistics.mean(s.reward for s in stats[-5:])
    assert first < 0.25 and last > first + 0.3, (first, last)
    assert stats[0].kl == 0.0 and stats[-1].kl > 0.05  # starts at the reference, then leaves
    assert all(s.clip_fraction == 0.0 for s in stats)  # μ = 1: the ratio is exactly 1
    assert all(1 <= n <= 8 for s in stats for n in s.lengths)


def test_several_updates_per_rollout_clip_and_beta_zero_skips_the_reference():
    model = tiny_policy()
    apply_lora(model, LoraConfig(rank=4, alpha=8))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=10.0)
    config = GRPOConfig(group=8, max_new_tokens=8, beta=0.0, updates=4, seed=0)
    stats = grpo_step(model, LetterTokenizer(), PROMPTS, share_of_a, optimizer, config)
    assert stats.kl is None
    assert stats.clip_fraction > 0.05  # later updates moved ratios out of [0.8, 1.2]


def test_chat_messages_are_rendered_with_the_chat_template():
    got = render_prompts(LetterTokenizer(), ["ab", [{"role": "user", "content": "cd"}]])
    assert got == ["ab", "cdh"]


# ---- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("group", 1), ("max_new_tokens", 0), ("temperature", 0.0), ("top_p", 0.0), ("clip", 0.0),
     ("beta", -0.1), ("beta", math.nan), ("updates", 0), ("seed", -1), ("max_grad_norm", 0.0)],
)  # fmt: skip
def test_bad_settings_name_the_setting(field, value):
    with pytest.raises(LLMHoodError, match=f"GRPO {field}="):
        GRPOConfig(**{field: value}).validate()


def test_a_step_number_is_a_whole_number():
    model = tiny_policy()
    with pytest.raises(LLMHoodError, match="GRPO step=-1"):
        rollout(model, LetterTokenizer(), PROMPTS, share_of_a, GRPOConfig(beta=0.0), step=-1)


def test_a_kl_penalty_needs_adapters():
    with pytest.raises(LLMHoodError, match="apply_lora first, or set beta=0"):
        rollout(tiny_policy(), LetterTokenizer(), PROMPTS, share_of_a, GRPOConfig())


def test_reward_from_the_current_directory_and_from_a_file(tmp_path, monkeypatch):
    (tmp_path / "grpo_test_rewards_cwd.py").write_text(
        "def length(prompts, completions):\n    return [len(c) for c in completions]\n"
    )
    monkeypatch.chdir(tmp_path)
    assert load_reward("grpo_test_rewards_cwd:length")(["p", "q"], ["ab", ""]) == [2.0, 0.0]
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "rules.py").write_text("def one(prompts, completions):\n    return [1] * 2\n")
    assert load_reward(f"{sub / 'rules.py'}:one")(["p", "q"], ["a", "b"]) == [1.0, 1.0]


@pytest.mark.parametrize(
    ("source", "spec", "message"),
    [
        (None, "grpo_no_such_module_xyz:f", "no module 'grpo_no_such_module_xyz'"),
        ("import grpo_no_such_dependency_xyz\n", "grpo_test_dep:f",
         "imports 'grpo_no_such_dependency_xyz', which is not installed"),
        ("raise RuntimeError('boom')\n", "grpo_test_raises:f", "RuntimeError: boom"),
        ("def g(p, c):\n    return []\n", "grpo_test_missing:f", "no attribute 'f'.*g"),
        ("f = 3\n", "grpo_test_value:f", "is a int, not a function"),
        (None, "no_colon_here", "does not name a function"),
        (None, "missing/dir/rules.py:f", "no such file"),
    ],
)  # fmt: skip
def test_bad_reward_specs(tmp_path, monkeypatch, source, spec, message):
    if source is not None:
        (tmp_path / f"{spec.partition(':')[0]}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LLMHoodError, match=message):
        load_reward(spec)


def _raises(prompts, completions):
    raise ValueError("no answer found")


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (_raises, "_raises raised ValueError: no answer found"),
        (lambda p, c: [1.0], "returned 1 values for 2 completions"),
        (lambda p, c: 1.0, "returned float, not a list"),
        (lambda p, c: [1.0, math.inf], "returned inf for completion 1"),
        (lambda p, c: [1.0, "yes"], "returned 'yes' for completion 1"),
    ],
)
def test_a_bad_reward_is_named_with_its_problem(fn, message):
    reward = Reward(fn, fn.__qualname__)
    with pytest.raises(LLMHoodError, match=message):
        reward(["p", "q"], ["a", "b"])


def test_grpo_step_checks_a_plain_reward_function_too():
    model = tiny_policy()
    apply_lora(model, LoraConfig(rank=4, alpha=8))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    config = GRPOConfig(group=2, max_new_tokens=2)
    with pytest.raises(LLMHoodError, match="returned 3 values for 8 completions"):
        grpo_step(model, LetterTokenizer(), PROMPTS, lambda p, c: [0.0] * 3, optimizer, config)
