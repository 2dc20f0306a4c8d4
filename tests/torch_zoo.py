"""Architectures written out for the PyTorch adapter's tests and benchmarks (no torchvision/timm).

Each builder takes a width ``w`` (tiny in the tests, real in ``benchmarks/zoo.py``) and returns
``(model, example_input)``. They follow the published designs and the way torchvision and timm
write them (timm's BatchNormAct calls ``F.batch_norm``; its ConvNeXt LayerNorm2d permutes around
``F.layer_norm``; ViT fuses ``qkv`` and calls ``F.scaled_dot_product_attention``), with every
parametrized op a module (a layer scale is a ``LayerScale`` module) so that the brute-force test
can find them by type.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ZOO", "randomize_", "LayerScale", "BatchNormAct2d", "LayerNorm2d"]


# ---------------------------------------------------------------------------- shared pieces
class LayerScale(nn.Module):
    """A learnable per-channel multiplier on dimension ``dim`` (ConvNeXt, CaiT, ViT-L)."""

    def __init__(self, c: int, dim: int = -1, init: float = 1e-6):
        super().__init__()
        self.dim = dim
        self.gamma = nn.Parameter(init * torch.ones(c))

    def forward(self, x):
        if self.dim == -1:
            return x * self.gamma
        return x * self.gamma.view(-1, *([1] * (x.ndim - 1 - self.dim)))


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's BatchNormAct2d: ``F.batch_norm`` then an activation, in one module."""

    def __init__(self, c: int, act: type[nn.Module] = nn.Identity):
        super().__init__(c)
        self.act = act()

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum, self.eps)
        return self.act(x)


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: LayerNorm over channels of an NCHW tensor (permute, norm, permute)."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with basic blocks; ``imagenet``: the 7×7/2 stem and max pool of ResNet-18/34."""

    def __init__(self, w=4, blocks=(2, 2), n_out=3, imagenet=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False) if imagenet else nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet else nn.Identity()
        self.bn1 = nn.BatchNorm2d(w)
        layers, cin = [], w
        for k, n in enumerate(blocks):
            cout = w * 2 ** k
            layers += [BasicBlock(cin, cout, 1 if k == 0 else 2)] + [BasicBlock(cout, cout, 1) for _ in range(n - 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, n_out)

    def forward(self, x):
        x = self.layers(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


class Bottleneck(nn.Module):
    """torchvision's bottleneck, with its in-place ReLU and ``out += identity``."""

    def __init__(self, c, mid, stride=1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, 4 * mid, 1, bias=False), nn.BatchNorm2d(4 * mid)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c != 4 * mid:
            self.downsample = nn.Sequential(nn.Conv2d(c, 4 * mid, 1, stride, bias=False), nn.BatchNorm2d(4 * mid))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class BottleneckResNet(nn.Module):
    def __init__(self, w=2, n_out=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4 * w, 3, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(True))
        self.layer1 = nn.Sequential(Bottleneck(4 * w, w), Bottleneck(4 * w, w))
        self.layer2 = nn.Sequential(Bottleneck(4 * w, 2 * w, 2), Bottleneck(8 * w, 2 * w))
        self.fc = nn.Linear(8 * w, n_out)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------------------- DenseNet
class DenseLayer(nn.Module):
    """DenseNet's pre-activation layer: BN, ReLU, conv, concatenated to its input."""

    def __init__(self, cin, growth):
        super().__init__()
        self.norm, self.conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.norm(x)))], 1)


class DenseNet(nn.Module):
    def __init__(self, w=4, growth=3, n_out=3):
        super().__init__()
        self.conv0 = nn.Conv2d(3, w, 3, padding=1, bias=False)
        self.block = nn.Sequential(DenseLayer(w, growth), DenseLayer(w + growth, growth))
        self.transition = nn.Sequential(nn.BatchNorm2d(w + 2 * growth), nn.ReLU(), nn.Conv2d(w + 2 * growth, w, 1),
                                        nn.AvgPool2d(2))
        self.norm, self.fc = nn.BatchNorm2d(w), nn.Linear(w, n_out)

    def forward(self, x):
        x = self.transition(self.block(self.conv0(x)))
        return self.fc(F.relu(self.norm(x)).mean((2, 3)))


# ---------------------------------------------------------------------------- VGG
class VGG(nn.Module):
    def __init__(self, cfg, pool=2, hidden=16, n_out=3):
        super().__init__()
        layers, cin = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Linear(cin * pool * pool, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(), nn.Linear(hidden, n_out))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg11(w=64, hidden=4096, n_out=1000, pool=7):
    cfg = [w, "M", 2 * w, "M", 4 * w, 4 * w, "M", 8 * w, 8 * w, "M", 8 * w, 8 * w, "M"]
    return VGG(cfg, pool, hidden, n_out)


# ---------------------------------------------------------------------------- MobileNetV2
def conv_bn(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU6):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(conv_bn(cin, hid, 1), conv_bn(hid, hid, 3, stride, hid),
                                  nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


V2_FULL = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
           (6, 320, 1, 1)]


class MobileNetV2(nn.Module):
    def __init__(self, w=4, n_out=3, cfg=None, last=None):
        super().__init__()
        cfg = cfg or [(1, w, 1, 1), (2, 2 * w, 2, 2), (2, 2 * w, 1, 1)]  # expand, out, n, stride
        last = last or 4 * w
        layers, cin = [conv_bn(3, w, 3, 2)], w
        for t, c, n, s in cfg:
            for k in range(n):
                layers.append(InvertedResidual(cin, c, s if k == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, n_out))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------------------- MobileNetV3
class SqueezeExcitation(nn.Module):
    """torchvision's: avg pool, fc1, ReLU, fc2, Hardsigmoid, ``scale * input``."""

    def __init__(self, c, squeeze):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.activation, self.scale_activation = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


def _divisible(v: int, d: int = 8) -> int:
    """torchvision's ``_make_divisible``: the nearest multiple of ``d``, at least ``d``."""
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


class V3Block(nn.Module):
    def __init__(self, cin, k, exp, cout, se, act, stride):
        super().__init__()
        layers = []
        if exp != cin:
            layers.append(conv_bn(cin, exp, 1, act=act))
        layers.append(conv_bn(exp, exp, k, stride, exp, act=act))
        if se:
            layers.append(SqueezeExcitation(exp, _divisible(exp // 4) if exp >= 32 else max(2, exp // 4)))
        layers.append(conv_bn(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return y + x if self.use_res else y


RE, HS = nn.ReLU, nn.Hardswish
V3_SMALL = [(3, 16, 16, True, RE, 2), (3, 72, 24, False, RE, 2), (3, 88, 24, False, RE, 1),
            (5, 96, 40, True, HS, 2), (5, 240, 40, True, HS, 1), (5, 240, 40, True, HS, 1),
            (5, 120, 48, True, HS, 1), (5, 144, 48, True, HS, 1), (5, 288, 96, True, HS, 2),
            (5, 576, 96, True, HS, 1), (5, 576, 96, True, HS, 1)]


class MobileNetV3(nn.Module):
    def __init__(self, w=4, n_out=3, cfg=None, last=None, hidden=None):
        super().__init__()
        cfg = cfg or [(3, w, w, True, RE, 2), (3, 3 * w, 2 * w, False, RE, 2), (3, 3 * w, 2 * w, False, RE, 1),
                      (5, 4 * w, 2 * w, True, HS, 1)]
        last, hidden = last or 4 * w, hidden or 4 * w
        layers, cin = [conv_bn(3, w, 3, 2, act=HS)], w
        for k, exp, cout, se, act, s in cfg:
            layers.append(V3Block(cin, k, exp, cout, se, act, s))
            cin = cout
        layers.append(conv_bn(cin, last, 1, act=HS))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last, hidden), HS(), nn.Dropout(0.2), nn.Linear(hidden, n_out))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---------------------------------------------------------------------------- EfficientNet (timm style)
class SqueezeExcite(nn.Module):
    """timm's: mean, conv_reduce, SiLU, conv_expand, ``x * x_se.sigmoid()``."""

    def __init__(self, c, rd):
        super().__init__()
        self.conv_reduce, self.act1, self.conv_expand = nn.Conv2d(c, rd, 1), nn.SiLU(), nn.Conv2d(rd, c, 1)

    def forward(self, x):
        x_se = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * x_se.sigmoid()


class MBConv(nn.Module):
    def __init__(self, cin, cout, expand, stride, k=3):
        super().__init__()
        mid = cin * expand
        self.conv_pw, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), BatchNormAct2d(mid, nn.SiLU)
        self.conv_dw = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        self.bn2 = BatchNormAct2d(mid, nn.SiLU)
        self.se = SqueezeExcite(mid, max(2, cin // 4))
        self.conv_pwl, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), BatchNormAct2d(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x):
        shortcut = x
        x = self.bn3(self.conv_pwl(self.se(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x)))))))
        return x + shortcut if self.has_skip else x


B0 = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
      (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]  # expand, kernel, stride, out, repeats


class EfficientNet(nn.Module):
    def __init__(self, w=4, n_out=3, cfg=None, head=None):
        super().__init__()
        cfg = cfg or [(2, 3, 1, w, 1), (2, 3, 2, 2 * w, 1), (2, 3, 1, 2 * w, 1)]
        head = head or 4 * w
        self.conv_stem, self.bn1 = nn.Conv2d(3, w, 3, 2, 1, bias=False), BatchNormAct2d(w, nn.SiLU)
        blocks, cin = [], w
        for e, k, s, c, n in cfg:
            for r in range(n):
                blocks.append(MBConv(cin, c, e, s if r == 0 else 1, k))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.conv_head, self.bn2 = nn.Conv2d(cin, head, 1, bias=False), BatchNormAct2d(head, nn.SiLU)
        self.classifier = nn.Linear(head, n_out)

    def forward(self, x):
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(x.mean((2, 3)))


# ---------------------------------------------------------------------------- ConvNeXt
class ConvNeXtBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.ls = LayerScale(c)

    def forward(self, x):
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.ls(self.pwconv2(self.act(self.pwconv1(self.norm(x)))))
        return shortcut + x.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, w=4, depths=(1, 1), n_out=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, w, 4, 4), LayerNorm2d(w, eps=1e-6))
        stages, cin = [], w
        for k, d in enumerate(depths):
            c = w * 2 ** k
            down = nn.Identity() if k == 0 else nn.Sequential(LayerNorm2d(cin, eps=1e-6), nn.Conv2d(cin, c, 2, 2))
            stages.append(nn.Sequential(down, *[ConvNeXtBlock(c) for _ in range(d)]))
            cin = c
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(cin, eps=1e-6)
        self.head = nn.Linear(cin, n_out)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.head(self.norm(x.mean((-2, -1))))


# ---------------------------------------------------------------------------- ViT
class Attention(nn.Module):
    """timm's ViT attention: fused qkv, heads by reshape/permute/unbind, SDPA, proj."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, d, hidden, act=nn.GELU):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d, hidden), act(), nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, d, heads, layer_scale=True):
        super().__init__()
        ls = (lambda: LayerScale(d, init=1.0)) if layer_scale else nn.Identity
        self.norm1, self.attn, self.ls1 = nn.LayerNorm(d), Attention(d, heads), ls()
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(d), Mlp(d, 4 * d), ls()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    def __init__(self, d=8, depth=2, heads=2, patch=4, img=8, n_out=3, layer_scale=True):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, patch, patch)
        n = (img // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(d, heads, layer_scale) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, n_out)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


# ---------------------------------------------------------------------------- GPT / OPT decoder
class CausalSelfAttention(nn.Module):
    """Separate q/k/v/out projections, explicit causal softmax attention (OPT-style)."""

    def __init__(self, d, heads, n_ctx):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x):
        B, T, C = x.shape
        h = self.heads
        q = self.q_proj(x).view(B, T, h, C // h).transpose(1, 2)
        k = self.k_proj(x).view(B, T, h, C // h).transpose(1, 2)
        v = self.v_proj(x).view(B, T, h, C // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // h))
        mask = x.new_ones(T, T, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.out_proj(y)


class GPTBlock(nn.Module):
    def __init__(self, d, heads, n_ctx):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(d), CausalSelfAttention(d, heads, n_ctx)
        self.ln_2, self.mlp = nn.LayerNorm(d), Mlp(d, 4 * d, nn.ReLU)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, d=8, depth=2, heads=2, vocab=11, n_ctx=6):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(n_ctx, d)
        self.h = nn.Sequential(*[GPTBlock(d, heads, n_ctx) for _ in range(depth)])
        self.ln_f, self.lm_head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        return self.lm_head(self.ln_f(self.h(x)))


# ---------------------------------------------------------------------------- LLaMA-like (RMSNorm, MHA, SwiGLU)
class SwiGLU(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False), \
            nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class LlamaBlock(nn.Module):
    def __init__(self, d, heads, n_ctx):
        super().__init__()
        self.norm1 = nn.RMSNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, bias=False, batch_first=True)
        self.norm2, self.mlp = nn.RMSNorm(d), SwiGLU(d, 3 * d)
        self.register_buffer("mask", torch.triu(torch.full((n_ctx, n_ctx), float("-inf")), 1))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=self.mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class Llama(nn.Module):
    def __init__(self, d=8, depth=2, heads=2, vocab=11, n_ctx=6):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.Sequential(*[LlamaBlock(d, heads, n_ctx) for _ in range(depth)])
        self.norm, self.head = nn.RMSNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        return self.head(self.norm(self.layers(self.embed(idx))))


# ---------------------------------------------------------------------------- UNet
def double_conv(cin, cout, bn=True):
    if bn:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())


class UNet(nn.Module):
    def __init__(self, w=4, n_out=2):
        super().__init__()
        self.enc1, self.enc2 = double_conv(3, w), double_conv(w, 2 * w, bn=False)
        self.pool = nn.MaxPool2d(2)
        self.mid = double_conv(2 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, 2)
        self.dec2 = double_conv(4 * w, 2 * w, bn=False)
        self.up1 = nn.Upsample(scale_factor=2, mode="bilinear")
        self.dec1 = double_conv(2 * w + w, w)
        self.out = nn.Conv2d(w, n_out, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)


# ---------------------------------------------------------------------------- the zoo
def _img(n, size):
    return torch.randn(n, 3, size, size)


def _tokens(n, t, vocab=11):
    return torch.randint(0, vocab, (n, t))


ZOO = {
    "resnet": lambda w=4: (ResNet(w), _img(8, 8)),
    "resnet_bottleneck": lambda w=2: (BottleneckResNet(w), _img(8, 8)),
    "densenet": lambda w=4: (DenseNet(w), _img(8, 8)),
    "vgg": lambda w=4: (VGG([w, "M", 2 * w, "M", 2 * w], 2, 4 * w), _img(8, 8)),
    "mobilenet_v2": lambda w=4: (MobileNetV2(w), _img(8, 16)),
    "mobilenet_v3": lambda w=4: (MobileNetV3(w), _img(8, 16)),
    "efficientnet": lambda w=4: (EfficientNet(w), _img(8, 16)),
    "convnext": lambda w=4: (ConvNeXt(w), _img(8, 16)),
    "vit": lambda w=8: (ViT(w), _img(8, 8)),
    "gpt": lambda w=8: (GPT(w), _tokens(8, 6)),
    "llama": lambda w=8: (Llama(w), _tokens(8, 6)),
    "unet": lambda w=4: (UNet(w), _img(8, 8)),
}


def randomize_(model: nn.Module, seed: int = 0, x=None, zero_init_last: bool = False) -> nn.Module:
    """Generic parameters (no zeros, no ones), in eval mode.

    BatchNorm affine parameters are ``|γ| ∈ [0.5, 1.5]``, ``|β| <= 0.3``; with ``x``, the running
    statistics are those of the batch ``x`` (so that every channel takes both signs, as in a
    trained network: no ReLU is dead on the sample), else random. With ``zero_init_last`` the last
    BatchNorm of every residual block gets ``γ = β = 0`` (torchvision's ``zero_init_residual``).
    """
    g = torch.Generator().manual_seed(seed)

    def rand(shape, lo, hi):
        sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
        return sign * (lo + (hi - lo) * torch.rand(shape, generator=g))

    with torch.no_grad():
        bn = {name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._NormBase)}
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            owner, _, leaf = name.rpartition(".")
            if not t.is_floating_point() or leaf == "mask":
                continue
            if leaf == "running_var":
                t.copy_(0.5 + 1.5 * torch.rand(t.shape, generator=g))
            elif leaf == "running_mean":
                t.copy_(torch.rand(t.shape, generator=g) * 2 - 1)
            elif owner in bn:
                t.copy_(rand(t.shape, 0.5, 1.5) if leaf == "weight" else rand(t.shape, 0.0, 0.3))
            else:
                fan = t.shape[1] * t[0, 0].numel() if t.ndim >= 2 else 1
                t.copy_(rand(t.shape, 0.3, 1.3) * (2.0 / math.sqrt(fan) if t.ndim >= 2 else 1.0))
        if zero_init_last:
            for m in model.modules():
                if isinstance(m, BasicBlock):
                    m.bn2.weight.zero_()
                    m.bn2.bias.zero_()
        if x is not None:
            norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
            for m in norms:
                m.momentum = 1.0
            model.train()(x)
            for m in norms:
                m.momentum = 0.1
    return model.eval()
