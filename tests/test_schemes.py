"""Training schemes (pix2pix, CycleGAN, UNIT): each network gets gradients only from its own losses,
CycleGAN's cycle and identity terms vanish for identity generators, the objectives equal a naive
recomputation with the papers' weights, and the registry's bad-input errors name the field."""

from __future__ import annotations

import pytest
import torch

from benchmark.config import TrainingConfig
from benchmark.core.errors import UserError
from benchmark.schemes import SCHEMES, build_scheme, scheme_options
from benchmark.schemes.base import l1
from benchmark.step_settings import StepSettings
from losses import build_loss
from losses.base import CompositeLoss
from models import build_model

TRAINING = TrainingConfig(epochs=2, batch_size=2, patch_size=32, optimizer={"name": "adam", "lr": 2e-4,
                          "kwargs": {"betas": [0.5, 0.999]}})  # fmt: skip
PLAIN = StepSettings()  # a plain fp32 step, unclipped, checked at every update
GENERATORS = {
    "pix2pix": ("unet", {"depth": 2, "channels": 4}),
    "cyclegan": ("resnet_gen", {"channels": 4, "blocks": 1}),
    "unit": ("unit", {"channels": 4, "n_res": 2}),
}
SMALL_D = {"discriminator_kwargs": {"channels": 4}}


def _scheme(name: str, loss: CompositeLoss | None = None, **kwargs):
    torch.manual_seed(0)
    arch, arch_kwargs = GENERATORS[name]
    rng = torch.Generator().manual_seed(0)
    return build_scheme(name, {**SMALL_D, **kwargs}, model=build_model(arch, arch_kwargs),
                        loss=loss if loss is not None else CompositeLoss([]), training=TRAINING, rng=rng,
                        build_network=lambda: build_model(arch, arch_kwargs))  # fmt: skip


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = 0.25 + 0.05 * torch.rand(2, 1, 32, 32, generator=g)
    return y + 0.01 * torch.randn(2, 1, 32, 32, generator=g), y


def _snapshot(modules) -> dict[str, torch.Tensor]:
    return {f"{i}.{n}": p.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}


def _changed(before: dict[str, torch.Tensor], modules) -> set[str]:
    after = _snapshot(modules)
    return {k for k in before if not torch.equal(before[k], after[k])}


def _roles(scheme) -> tuple[list, list]:
    """(generator-side modules, discriminators) of a scheme."""
    ds = [m for k, m in scheme.networks.items() if k.startswith("D")]
    gs = [scheme.model, *(m for k, m in scheme.networks.items() if not k.startswith("D"))]
    return gs, ds


@pytest.mark.parametrize("name", ["pix2pix", "cyclegan", "unit"])
def test_generator_step_leaves_discriminators_alone_and_vice_versa(name):
    s = _scheme(name, build_loss([("mstlf_attention", 1.0, {"levels": 16})]))
    x, y = _batch()
    gs, ds = _roles(s)
    s.train()
    # generator step: every generator-side parameter moves, no discriminator weight or gradient does
    d_before, g_before = _snapshot(ds), _snapshot(gs)
    if name == "pix2pix":
        s.generator_step(x, y, s.model(x), PLAIN)
    else:
        s.generator_step(x, y, PLAIN)
    assert not _changed(d_before, ds)
    assert all(p.grad is None for d in ds for p in d.parameters()), "a generator step gave D gradients"
    moved = _changed(g_before, gs)
    grads = {n for m in gs for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads == {n for m in gs for n, _ in m.named_parameters()}, "every generator parameter gets a gradient"
    assert moved, "the generator step changed nothing"
    gamma = [p for n, p in s.loss.named_parameters() if n.endswith("gamma")]
    assert gamma and all(float(p.detach().abs().sum()) > 0 for p in gamma), "the attention's gamma trains with the generator"
    # discriminator step: every D parameter moves, no generator weight does
    for m in gs:
        m.zero_grad(set_to_none=True)
    d_before, g_before = _snapshot(ds), _snapshot(gs)
    if name == "pix2pix":
        s.discriminator_step(x, y, s.model(x).detach(), PLAIN)
    elif name == "cyclegan":
        s.discriminator_step(x, y, s.model(x).detach(), s.networks["F"](y).detach(), PLAIN)
    else:
        s.discriminator_step(x, y, PLAIN)
    assert not _changed(g_before, gs)
    assert all(p.grad is None for m in gs for p in m.parameters()), "a discriminator step gave G gradients"
    assert _changed(d_before, ds) == set(d_before), "every discriminator parameter moves"


def test_cyclegan_cycle_and_identity_terms_vanish_for_identity_generators():
    arch_kwargs = {"channels": 4, "blocks": 1, "zero_init_output": True}  # the untrained network is the identity
    rng = torch.Generator().manual_seed(0)
    s = build_scheme("cyclegan", SMALL_D, model=build_model("resnet_gen", arch_kwargs), loss=CompositeLoss([]),
                     training=TRAINING, rng=rng, build_network=lambda: build_model("resnet_gen", arch_kwargs))  # fmt: skip
    x, y = _batch()
    _, terms, fake_b, fake_a = s.generator_losses(x, y)
    for k in ("cycle_A", "cycle_B", "idt_A", "idt_B"):
        assert float(terms[k]) == 0.0, k
    assert torch.equal(fake_b, x) and torch.equal(fake_a, y)
    # not vanishing once G is not the identity
    with torch.no_grad():
        next(s.model.parameters()).add_(0.1)
        for p in s.model.parameters():
            p.add_(0.01)
    _, terms, _, _ = s.generator_losses(x, y)
    assert float(terms["cycle_A"]) > 0 and float(terms["idt_B"]) > 0


def test_cyclegan_objective_matches_a_naive_recomputation():
    loss = build_loss([("mse", 2.0, {})])
    s = _scheme("cyclegan", loss)
    x, y = _batch()
    total, terms, _, _ = s.generator_losses(x, y)
    g, f, da, db = s.model, s.networks["F"], s.networks["D_A"], s.networks["D_B"]
    fb, fa = g(x), f(y)
    naive = (((db(fb) - 1) ** 2).mean() + ((da(fa) - 1) ** 2).mean()
             + 10 * ((f(fb) - x).abs().mean() + (g(fa) - y).abs().mean())
             + 10 * 0.5 * ((f(x) - x).abs().mean() + (g(y) - y).abs().mean())
             + 2.0 * (((f(fb) - x) ** 2).mean() + ((g(fa) - y) ** 2).mean()))  # fmt: skip
    torch.testing.assert_close(total, naive, rtol=1e-5, atol=1e-7)
    assert set(terms) == {"G_gan", "F_gan", "cycle_A", "cycle_B", "idt_A", "idt_B", "mse_A", "mse_B"}


def test_unit_objective_uses_the_paper_weights():
    s = _scheme("unit")
    x, y = _batch()
    state = s.rng.get_state()
    total, t = s.generator_losses(x, y)
    w = {"gan": 10.0, "kl": 0.1, "rec": 100.0, "cycle_kl": 0.1, "cycle": 100.0}
    naive = (w["gan"] * (t["G_gan_A"] + t["G_gan_B"]) + w["kl"] * (t["kl_A"] + t["kl_B"])
             + w["rec"] * (t["rec_A"] + t["rec_B"]) + w["cycle_kl"] * (t["cycle_kl_A"] + t["cycle_kl_B"])
             + w["cycle"] * (t["cycle_A"] + t["cycle_B"]))  # fmt: skip
    torch.testing.assert_close(total, naive)
    # the latent noise comes from the cell's generator: the same state gives the same objective
    s.rng.set_state(state)
    again, _ = s.generator_losses(x, y)
    assert torch.equal(total, again)
    # reconstruction of a: decode_a(encode_a(a) + noise) vs a, recomputed by hand
    s.rng.set_state(state)
    m = s.model
    mu_a = m.encode(x, "a")
    noise = torch.randn(mu_a.shape, generator=s.rng)
    torch.testing.assert_close(t["rec_A"], l1(m.decode(mu_a + noise, "a", x.shape[-2:]), x))
    torch.testing.assert_close(t["kl_A"], (mu_a**2).mean())


def test_pix2pix_discriminator_is_conditional_and_objective_matches():
    s = _scheme("pix2pix")
    assert s.networks["D"].net[0].in_channels == 2
    x, y = _batch()
    fake = s.model(x)
    d = s.networks["D"]
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    logits = d(torch.cat([x, fake], 1))
    naive = bce(logits, torch.ones_like(logits)) + 100 * (fake - y).abs().mean()
    total, terms = s.generator_step(x, y, fake, PLAIN)
    torch.testing.assert_close(total, naive.detach(), rtol=1e-5, atol=1e-6)
    assert set(terms) == {"G_gan", "l1"}


def test_scheme_registry_errors_name_the_field():
    with pytest.raises(UserError, match=r"architectures\[0\]\.scheme.*cyclegan"):
        build_scheme("cyclegann", {}, model=build_model("dncnn", {"depth": 3, "channels": 4}), loss=CompositeLoss([]),
                     training=TRAINING, rng=torch.Generator(), field="architectures[0].scheme")  # fmt: skip
    with pytest.raises(UserError, match=r"scheme_kwargs.*lambda_cycl\b.*allowed: .*lambda_cycle"):
        _scheme("cyclegan", lambda_cycl=3)
    with pytest.raises(UserError, match=r"scheme_kwargs.*lambda_l1"):
        _scheme("pix2pix", lambda_l1=-1)
    assert "pool_size" in scheme_options("cyclegan") and "model" not in scheme_options("cyclegan")
    assert {i.pairing for n, i in SCHEMES.items() if n in ("cyclegan", "unit")} == {"unpaired"}


@pytest.mark.parametrize("lr", [None, 5e-5])
def test_supervised_critic_rate_is_the_generators_unless_the_term_sets_one(lr):
    """A raised generator rate carries the critic with it (the CPU RED-CNN + WGAN-GP study's critic fell
    behind at 1e-4 against 1e-3); an explicit term ``lr`` wins; the rest of the term's optimizer stays."""
    kwargs = {"discriminator_kwargs": {"channels": 4}} | ({} if lr is None else {"lr": lr})
    loss = build_loss([("mse", 0.95, {}), ("wgan_gp", 0.05, kwargs)])
    training = TrainingConfig(epochs=1, batch_size=2, patch_size=32, optimizer={"name": "adam", "lr": 1e-3})
    scheme = build_scheme("supervised", {}, model=build_model("dncnn", {"depth": 3, "channels": 4}), loss=loss,
                          training=training, rng=torch.Generator().manual_seed(0),
                          build_network=lambda: build_model("dncnn", {"depth": 3, "channels": 4}))  # fmt: skip
    group = scheme.critic_optimizers["wgan_gp"].param_groups[0]
    assert group["lr"] == (1e-3 if lr is None else lr)
    assert group["betas"] == (0.9, 0.999) and group["weight_decay"] == 2e-5
    assert scheme.optimizer.param_groups[0]["lr"] <= 1e-3  # the generator's own (scheduled) rate is untouched


def test_pix2pix_pretraining_is_the_l1_term_alone_without_a_discriminator():
    """``lambda_gan: 0`` (issue #21's supervised pre-training): the objective is λ_L1·L1 recomputed by hand,
    one step leaves the discriminator untouched and changes the generator, and nothing adversarial is
    logged; a negative weight is refused naming the field."""
    s = _scheme("pix2pix", lambda_gan=0.0)
    x, y = _batch()
    d_before, g_before = _snapshot([s.networks["D"]]), _snapshot([s.model])
    fake = s.model(x)
    naive = 100 * (fake - y).abs().mean()
    total, logs, _ = s.step(x, y, PLAIN)
    torch.testing.assert_close(total, naive.detach())
    assert set(logs) == {"l1"}
    assert not _changed(d_before, [s.networks["D"]]) and _changed(g_before, [s.model])
    with pytest.raises(UserError, match=r"scheme_kwargs.*lambda_gan"):
        _scheme("pix2pix", lambda_gan=-1)


def test_unit_identity_term_and_warm_up_without_discriminators():
    """``lambda_identity`` adds λ·(‖x_ab − a‖₁ + ‖x_ba − b‖₁), recomputed by hand from the same latent noise
    (the logged ``idt_A``/``idt_B``); with ``lambda_gan: 0`` a step leaves both discriminators alone."""
    s = _scheme("unit", lambda_identity=7.0)
    x, y = _batch()
    state = s.rng.get_state()
    total, t = s.generator_losses(x, y)
    s.rng.set_state(state)
    m = s.model
    mu_a, mu_b = m.encode(x, "a"), m.encode(y, "b")
    z_a = mu_a + torch.randn(mu_a.shape, generator=s.rng)
    z_b = mu_b + torch.randn(mu_b.shape, generator=s.rng)
    torch.testing.assert_close(t["idt_A"], l1(m.decode(z_a, "b", x.shape[-2:]), x))
    torch.testing.assert_close(t["idt_B"], l1(m.decode(z_b, "a", y.shape[-2:]), y))
    s.rng.set_state(state)
    base = _scheme("unit")
    base.model.load_state_dict(s.model.state_dict())
    for k in ("D_A", "D_B"):
        base.networks[k].load_state_dict(s.networks[k].state_dict())
    base.rng.set_state(state)
    total_base, _ = base.generator_losses(x, y)
    torch.testing.assert_close(total, total_base + 7.0 * (t["idt_A"] + t["idt_B"]))
    warm = _scheme("unit", lambda_gan=0.0, lambda_cycle=0.0, lambda_cycle_kl=0.0, lambda_identity=100.0)
    ds = [warm.networks["D_A"], warm.networks["D_B"]]
    before = _snapshot(ds)
    _, logs, _ = warm.step(x, y, PLAIN)
    assert not _changed(before, ds) and "D_A" not in logs and "idt_A" in logs


def test_supervised_output_gradient_norms_match_autograd_per_term():
    """``log_output_gradients``: ``gradnorm_<term>`` is ‖∂(w·L)/∂ŷ‖ of each weighted term at the step's
    output, the same as a naive recomputation (MSE: ‖w·2(ŷ − y)/N‖), and no parameter's gradient or value
    is touched by the measurement (the step with logging equals the step without)."""
    def build(log: bool):
        torch.manual_seed(0)
        loss = build_loss([("mse", 0.95, {}), ("l1", 0.05, {})])
        return build_scheme("supervised", {"log_output_gradients": log}, model=build_model("dncnn", {"depth": 3, "channels": 4}),
                            loss=loss, training=TRAINING, rng=torch.Generator().manual_seed(0),
                            build_network=lambda: build_model("dncnn", {"depth": 3, "channels": 4}))  # fmt: skip

    x, y = _batch()
    s, plain = build(True), build(False)
    pred = s.model(x).detach()
    _, logs, _ = s.step(x, y, PLAIN)
    _, plain_logs, _ = plain.step(x, y, PLAIN)
    mse_grad = 0.95 * 2 * (pred - y) / pred.numel()
    l1_grad = 0.05 * torch.sign(pred - y) / pred.numel()
    torch.testing.assert_close(logs["gradnorm_mse"], mse_grad.norm())
    torch.testing.assert_close(logs["gradnorm_l1"], l1_grad.norm())
    assert "gradnorm_mse" not in plain_logs
    for (n, p), (_, q) in zip(s.model.named_parameters(), plain.model.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def _balanced_mse_wgan():
    """A seeded ``balance_adversarial`` supervised scheme on 0.95 MSE + 0.05 WGAN-GP, and its loss."""
    torch.manual_seed(0)
    loss = build_loss([("mse", 0.95, {}), ("wgan_gp", 0.05, {"discriminator_kwargs": {"channels": 4}})])
    s = build_scheme("supervised", {"balance_adversarial": True}, model=build_model("dncnn", {"depth": 3, "channels": 4}),
                     loss=loss, training=TRAINING, rng=torch.Generator().manual_seed(0),
                     build_network=lambda: build_model("dncnn", {"depth": 3, "channels": 4}))  # fmt: skip
    return s, loss


def test_supervised_balanced_adversarial_weight_sets_the_gradient_share():
    """``balance_adversarial``: the adversarial term's pull on the output is r = Σw_adv/Σw_pixel of the pixel
    terms' (0.05/0.95 here), whatever the raw weights' scale: recomputed from autograd on the returned
    objective; λ_t is logged; an entry without adversarial terms is unchanged, one without a pixel term refused."""
    s, loss = _balanced_mse_wgan()
    x, y = _batch()
    pred = s.model(x).detach().requires_grad_(True)
    total, values = s.balanced_objective(pred, y)
    lam = values["adv_balance"]
    pixel = 0.95 * torch.nn.functional.mse_loss(pred, y)
    adv = lam * 0.05 * loss.terms["wgan_gp"](pred, y)
    torch.testing.assert_close(total, pixel + adv)
    g_pix = torch.autograd.grad(pixel, pred, retain_graph=True)[0].norm()
    g_adv = torch.autograd.grad(adv, pred)[0].norm()
    torch.testing.assert_close(g_adv / g_pix, torch.tensor(0.05 / 0.95), rtol=1e-4, atol=0)
    _, logs, _ = s.step(x, y, PLAIN)
    assert "adv_balance" in logs and float(logs["adv_balance"]) > 0
    def build(entry):
        return build_scheme("supervised", {"balance_adversarial": True}, model=build_model("dncnn", {"depth": 3, "channels": 4}),
                            loss=build_loss(entry), training=TRAINING, rng=torch.Generator(),
                            build_network=lambda: build_model("dncnn", {"depth": 3, "channels": 4}))  # fmt: skip

    assert not build([("mse", 1.0, {})]).balance_adversarial  # no adversarial term: the entry is unchanged
    with pytest.raises(UserError, match=r"balance_adversarial"):
        build([("wgan_gp", 1.0, {"discriminator_kwargs": {"channels": 4}})])


def test_balanced_validation_loss_is_the_balanced_objective_not_the_literal_weights():
    """A ``balance_adversarial`` cell validates on the objective it trains on: ``P + λ_t·A`` with λ_t from the
    validation output's own gradients (by hand here: autograd on the weighted MSE and critic terms), also
    under ``no_grad`` as in ``benchmark.train.validate``, with no parameter getting a gradient. The literal
    0.95 / 0.05 composite (the old value) differs from it."""
    s, loss = _balanced_mse_wgan()
    x, y = _batch()
    s.eval()
    with torch.no_grad():
        pred = s.model(x)
        total, terms = s.validation_terms(pred, y)
    out = pred.clone().requires_grad_(True)
    pixel = 0.95 * torch.nn.functional.mse_loss(out, y)
    adv = 0.05 * loss.terms["wgan_gp"](out, y)
    g_pix = torch.autograd.grad(pixel, out)[0].norm()
    g_adv = torch.autograd.grad(adv, out)[0].norm()
    lam = (0.05 / 0.95) * g_pix / g_adv
    expected = pixel.detach() + lam * adv.detach()
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(terms["adv_balance"], lam, rtol=1e-5, atol=0)
    literal, _ = loss.compute(pred, y)
    assert abs(float(literal) - float(total)) > 1e-3 * abs(float(total))
    assert not total.requires_grad
    assert all(p.grad is None for p in list(s.model.parameters()) + list(loss.parameters()))
