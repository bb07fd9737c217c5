"""``explain``'s pictures, for people: a token strip per input (tokens as boxes coloured by their integrated-gradients
attribution, red positive and blue negative, and by their rollout relevance), a layer x head grid of attention maps
with token labels, and one self-contained HTML page (inline CSS, coloured token spans, the attention grid embedded
as a data URI) for all inputs. matplotlib with the Agg backend: no display is needed."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

WRAP = 118  # characters per line of a token strip (monospace, 9 pt, 11 in wide)
MAX_GRID_TOKENS = 48  # tokens labelled on an attention map (longer inputs are cut, and the title says so)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def shown(token: str) -> str:
    """A token as a person reads it: byte-level BPE's and SentencePiece's space marks as a leading space."""
    return token.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\\n") or token


def _lines(tokens: list) -> list:
    """Token indices laid out in lines of about WRAP characters: [[(index, x), ...], ...]."""
    lines, line, x = [], [], 0.0
    for i, token in enumerate(tokens):
        width = len(shown(token)) + 1.4
        if line and x + width > WRAP:
            lines.append(line)
            line, x = [], 0.0
        line.append((i, x))
        x += width
    return lines + ([line] if line else [])


def _title(explained, target, kind: str) -> str:
    where = f" at token {target.position} ({shown(explained.tokens[target.position]).strip()})" \
        if kind == "token" else ""
    what = "next token " + repr(target.label) if kind == "causal" else target.label
    prob = f" (p={target.probability:.3f})" if target.probability is not None else ""
    ig = f"; IG sum {sum(target.ig):+.3f} = F(x)-F(b) {target.f_x - target.f_baseline:+.3f}, delta {target.delta:.1e}" \
        if target.ig is not None else ""
    return f"{what}{where}{prob}{ig}"


def token_strip(explained, path: Path, kind: str) -> Path:
    """The PNG of one input: for each target its IG strip (red +, blue -) and its rollout strip (green)."""
    plt = _pyplot()
    from matplotlib import colormaps
    from matplotlib.colors import Normalize, TwoSlopeNorm

    layout = _lines(explained.tokens)
    strips = []  # (title, values, cmap, norm)
    for target in explained.targets:
        title = _title(explained, target, kind)
        if target.ig is not None:
            top = max(max(abs(v) for v in target.ig), 1e-12)
            strips.append((f"integrated gradients: {title}", target.ig, colormaps["RdBu_r"],
                           TwoSlopeNorm(0.0, -top, top)))
            title = ""
        if target.rollout is not None:
            strips.append((f"attention rollout{': ' + title if title else ''}", target.rollout, colormaps["Greens"],
                           Normalize(0.0, max(max(target.rollout), 1e-12))))
    rows = sum(len(layout) + 1.2 for _ in strips)
    fig = plt.figure(figsize=(11, 0.42 * rows + 0.3))
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98))
    ax.set_xlim(-0.5, WRAP + 4)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    y = 0.0
    for title, values, cmap, norm in strips:
        ax.text(-0.3, y + 0.45, title, fontsize=9, fontweight="bold", va="center")
        y += 1.2
        for line in layout:
            for i, x in line:
                colour = cmap(norm(values[i]))
                dark = sum(colour[:3]) < 1.3
                ax.text(x, y + 0.45, shown(explained.tokens[i]), family="monospace", fontsize=9, va="center",
                        color="white" if dark else "black",
                        bbox={"boxstyle": "round,pad=0.25", "facecolor": colour, "edgecolor": "0.75",
                              "linewidth": 0.5})
            y += 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def attention_grid(explained, path: Path | None, layers=None, heads=None) -> bytes:
    """A layers x heads grid of attention maps (query rows, key columns) with token labels; written to ``path``
    when given. Returns the PNG's bytes."""
    plt = _pyplot()
    attentions = explained.attentions
    n_layers, n_heads, size = attentions.shape[0], attentions.shape[1], attentions.shape[-1]
    layers = [layer for layer in (layers if layers else range(n_layers)) if 0 <= layer < n_layers]
    heads = [head for head in (heads if heads else range(n_heads)) if 0 <= head < n_heads]
    cut = min(size, MAX_GRID_TOKENS)
    labels = [shown(t).strip() or "␣" for t in explained.tokens[:cut]]
    cell = max(1.6, 0.12 * cut + 0.6)
    fig, axes = plt.subplots(len(layers), len(heads), figsize=(cell * len(heads) + 1.2, cell * len(layers) + 0.8),
                             squeeze=False)
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r][c]
            ax.imshow(attentions[layer, head, :cut, :cut].numpy(), cmap="viridis", vmin=0.0, aspect="equal")
            ax.set_title(f"layer {layer} head {head}", fontsize=8)
            ticks = range(cut)
            ax.set_xticks(ticks, labels if r == len(layers) - 1 else [""] * cut, rotation=90, fontsize=6)
            ax.set_yticks(ticks, labels if c == 0 else [""] * cut, fontsize=6)
            ax.tick_params(length=0)
    more = f" (first {cut} of {size} tokens)" if cut < size else ""
    fig.suptitle(f"attention (rows: queries, columns: keys){more}", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    data = buffer.getvalue()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data


def _spans(tokens: list, values: list, positive: str, negative: str | None) -> str:
    top = max((abs(v) for v in values), default=0.0) or 1.0
    out = []
    for token, value in zip(tokens, values):
        colour = positive if value >= 0 or negative is None else negative
        alpha = min(abs(value) / top, 1.0)
        out.append(f'<span class="t" style="background:rgba({colour},{alpha:.3f})" title="{value:+.4g}">'
                   f"{html.escape(shown(token))}</span>")
    return "".join(out)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
.input{border-top:1px solid #ddd;padding:.8em 0}.meta{color:#555;font-size:.9em;margin:.2em 0}
.t{font-family:ui-monospace,monospace;padding:.1em .15em;margin:.05em;border-radius:.25em;display:inline-block;
border:1px solid #e4e4e4;white-space:pre}.row{margin:.3em 0}.key{font-size:.8em;color:#666;width:6em;
display:inline-block}img{max-width:100%}"""


def html_page(items: list, kind: str, path: Path, model: str, grid: bytes | None = None,
              grid_index: int = 0) -> Path:
    """The self-contained page of all inputs: coloured token spans (IG: red +, blue -; rollout: green) and the
    attention grid of input ``grid_index`` as an embedded PNG."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ptcli explain</title><style>{CSS}</style>"
             f"</head><body><h1>ptcli explain</h1><p class='meta'>model: {html.escape(model)}; integrated gradients: "
             "<span style='background:rgba(214,39,40,.6)'>&nbsp;+&nbsp;</span> raises the target's logit, "
             "<span style='background:rgba(31,119,180,.6)'>&nbsp;-&nbsp;</span> lowers it; rollout: "
             "<span style='background:rgba(44,160,44,.6)'>&nbsp;relevance&nbsp;</span>. Hover a token for its "
             "value.</p>"]
    for number, explained in enumerate(items):
        parts.append(f"<div class='input'><div><b>{number}.</b> {html.escape(explained.prompt.text)}</div>")
        for target in explained.targets:
            parts.append(f"<div class='meta'>{html.escape(_title(explained, target, kind))}</div>")
            if target.ig is not None:
                parts.append("<div class='row'><span class='key'>IG</span>"
                             f"{_spans(explained.tokens, target.ig, '214,39,40', '31,119,180')}</div>")
            if target.rollout is not None:
                parts.append("<div class='row'><span class='key'>rollout</span>"
                             f"{_spans(explained.tokens, target.rollout, '44,160,44', None)}</div>")
        if grid is not None and number == grid_index:
            parts.append(f"<img alt='attention maps' src='data:image/png;base64,{base64.b64encode(grid).decode()}'>")
        parts.append("</div>")
    parts.append("</body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path
