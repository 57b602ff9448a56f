"""Concepts and the feature explorer: the explorer's self-contained HTML + JS, and the chapter's plots.

:func:`explorer_html` renders :func:`recsae_core.explorer.feature_cards` as one ``<div>`` with the data
as embedded JSON and a small vanilla script: a searchable, sortable list of every feature (label, score,
density) and a card per feature whose plots use the page's ``window.Plotly`` (the book's vendored
plotly.js; no other library, no outside request, no kernel). Plots are drawn when a card opens.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd

__all__ = [
    "explorer_html",
    "explorer_link",
    "plot_popularity_tradeoff",
    "plot_score_distributions",
    "popularity_table",
    "show_explorer",
]

_CSS = """
#ID{font-size:14px;border:1px solid #d0d7de;border-radius:6px;padding:10px;margin:8px 0}
#ID .rx-controls{display:flex;gap:8px;align-items:center;flex-wrap:wrap;margin-bottom:6px}
#ID .rx-controls input[type=search]{flex:1;min-width:220px;padding:4px 8px;border:1px solid #aaa;border-radius:4px}
#ID .rx-list{max-height:260px;overflow-y:auto;border:1px solid #eee}
#ID table.rx-t{width:100%;border-collapse:collapse;margin:0}
#ID table.rx-t td,#ID table.rx-t th{padding:2px 6px;border-bottom:1px solid #f0f0f0;text-align:left;vertical-align:top}
#ID table.rx-t th{position:sticky;top:0;background:#f6f8fa}
#ID .rx-list tr.rx-row{cursor:pointer}
#ID .rx-list tr.rx-row:hover{background:#eef5ff}
#ID .rx-list tr.rx-sel{background:#dbeafe}
#ID .rx-card{margin-top:10px}
#ID .rx-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:10px}
#ID .rx-title{font-size:16px;font-weight:bold;margin:4px 0}
#ID .rx-box{border:1px solid #eee;border-radius:4px;padding:6px}
#ID .rx-box h4{margin:0 0 4px 0;font-size:14px}
#ID .rx-plot{height:210px}
#ID .rx-muted{color:#666}
#ID a.rx-link{cursor:pointer;color:#0969da}
#ID .rx-num{text-align:right !important;font-variant-numeric:tabular-nums}
"""

_JS = r"""
(function(){
const root=document.getElementById(ROOT_ID);
const D=JSON.parse(document.getElementById(ROOT_ID+'-data').textContent);
const F=D.features, IT=D.items;
const esc=s=>String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
const fmt=(x,d)=>x===null||x===undefined?'–':Number(x).toFixed(d===undefined?2:d);
const pct=x=>x===null||x===undefined?'–':(100*x).toFixed(x<0.01&&x>0?2:1)+'%';
const conf=f=>f.scores&&f.scores.confidence?f.scores.confidence[0]:null;
const label=f=>f.dead?'(dead: never fires on the case rows)':(f.label||'(no description)');
const q=root.querySelector('input[type=search]'), sortSel=root.querySelector('select'),
      dead=root.querySelector('input[type=checkbox]'), tbody=root.querySelector('tbody'),
      count=root.querySelector('.rx-count'), card=root.querySelector('.rx-card');
let current=null;
function plot(el,data,layout){
  if(window.Plotly){window.Plotly.newPlot(el,data,Object.assign({margin:{l:40,r:10,t:24,b:40},font:{size:11}},layout),{displayModeBar:false,responsive:true});}
  else{setTimeout(()=>plot(el,data,layout),200);}
}
function rows(){
  const s=q.value.trim().toLowerCase();
  let L=F.filter(f=>(dead.checked||!f.dead)&&(!s||('#'+f.id+' '+f.id+' '+label(f)).toLowerCase().includes(s)));
  const key=sortSel.value;
  const num=(v)=>v===null||v===undefined?-1:v;
  if(key==='label')L.sort((a,b)=>label(a).localeCompare(label(b))||a.id-b.id);
  else if(key==='score')L.sort((a,b)=>num(conf(b))-num(conf(a))||b.density-a.density||a.id-b.id);
  else if(key==='density')L.sort((a,b)=>b.density-a.density||a.id-b.id);
  else L.sort((a,b)=>a.id-b.id);
  count.textContent=L.length+' of '+F.length+' features';
  tbody.innerHTML=L.map(f=>'<tr class="rx-row'+(f.id===current?' rx-sel':'')+'" data-id="'+f.id+'"><td class="rx-num">'+f.id+'</td><td>'+esc(label(f))+'</td><td class="rx-num">'+fmt(conf(f))+'</td><td class="rx-num">'+pct(f.density)+'</td></tr>').join('');
}
function itemList(pairs,fmtv){return '<ol>'+pairs.map(p=>'<li>'+esc(IT[p[0]])+(fmtv?' <span class="rx-muted">'+fmtv(p)+'</span>':'')+'</li>').join('')+'</ol>';}
function links(pairs){return pairs.length?pairs.map(p=>'<a class="rx-link" data-go="'+p[0]+'">#'+p[0]+'</a> <span class="rx-muted">('+fmt(p[1])+')</span>').join(', '):'<span class="rx-muted">none</span>';}
function open(id){
  const f=F[id]; current=id;
  tbody.querySelectorAll('tr').forEach(tr=>tr.classList.toggle('rx-sel',+tr.dataset.id===id));
  let h='<div class="rx-title">Feature #'+f.id+': '+esc(label(f))+'</div>';
  if(f.scores){h+='<p>'+Object.entries(f.scores).map(([k,v])=>'<b>'+esc(k.replace(/_/g,' '))+'</b> '+fmt(v[0])+' <span class="rx-muted">['+fmt(v[1])+', '+fmt(v[2])+']</span>').join(' · ')+' <span class="rx-muted">(95% bootstrap intervals)</span></p>';}
  h+='<p><b>Density</b> '+pct(f.density)+' of '+D.n_rows.toLocaleString()+' case rows ('+esc(D.kind)+' rows at '+esc(D.site)+').</p>';
  if(f.dead){card.innerHTML=h;return;}
  h+='<div class="rx-grid">';
  h+='<div class="rx-box"><h4>Activation histogram</h4><div class="rx-plot rx-hist"></div></div>';
  h+='<div class="rx-box"><h4>Effect on item scores (decoder atom · item embeddings)</h4><div class="rx-plot rx-effect"></div></div>';
  h+='<div class="rx-box"><h4>Top '+(D.kind==='user'?'cases (top-1 item of the user)':'items')+'</h4>'+itemList(f.top,p=>'act '+fmt(p[1])+(p[2]>=0?', user '+p[2]:''))+'</div>';
  h+='<div class="rx-box"><h4>Items per activation band</h4><table class="rx-t"><tr><th>band</th><th>contains</th><th>examples</th></tr>'+f.bands.map(b=>'<tr><td>'+esc(b[0])+'</td><td class="rx-num">'+pct(b[1])+'</td><td>'+b[2].map(i=>esc(IT[i])).join('<br>')+'</td></tr>').join('')+'</table></div>';
  h+='<div class="rx-box"><h4>Label enrichment (top rows vs all rows)</h4><table class="rx-t"><tr><th>attribute</th><th>top</th><th>all</th><th>lift</th><th>p (Bonf.)</th></tr>'+f.enrich.map(e=>'<tr><td>'+esc(e[0])+'</td><td class="rx-num">'+pct(e[1])+'</td><td class="rx-num">'+pct(e[2])+'</td><td class="rx-num">'+fmt(e[3])+'</td><td class="rx-num">'+(e[4]<1e-3?Number(e[4]).toExponential(1):fmt(e[4],3))+'</td></tr>').join('')+'</table></div>';
  const c=f.causal;
  h+='<div class="rx-box"><h4>Causal effect: steered '+esc(c.edit||('+'+fmt(c.value)))+' for '+D.n_users+' users</h4><p>'+pct(c.changed)+' of each top-'+D.k+' replaced; NDCG@'+D.k+' '+fmt(c.ndcg[0],4)+' → '+fmt(c.ndcg[1],4)+'</p><div class="rx-plot rx-causal"></div></div>';
  h+='<div class="rx-box"><h4>Neighbours</h4><p><b>co-activation</b> (Jaccard): '+links(f.neighbours.coactivation)+'</p><p><b>decoder cosine</b>: '+links(f.neighbours.decoder)+'</p></div>';
  h+='</div>';
  card.innerHTML=h;
  card.querySelectorAll('a.rx-link').forEach(a=>a.addEventListener('click',()=>open(+a.dataset.go)));
  const n=f.hist.counts.length, w=f.hist.max/n;
  plot(card.querySelector('.rx-hist'),[{type:'bar',x:f.hist.counts.map((_,i)=>(i+0.5)*w),y:f.hist.counts,width:w*0.95,marker:{color:'#4c78a8'}}],{xaxis:{title:{text:'activation (> 0)'}},yaxis:{title:{text:'rows'}}});
  const ef=f.effect.up.concat(f.effect.down.slice().reverse());
  const short=s=>s.length>28?s.slice(0,27)+'…':s;
  plot(card.querySelector('.rx-effect'),[{type:'bar',orientation:'h',y:ef.map(p=>short(IT[p[0]])),x:ef.map(p=>p[1]),marker:{color:ef.map(p=>p[1]>=0?'#59a14f':'#e15759')}}],{margin:{l:170,r:10,t:10,b:36},yaxis:{autorange:'reversed'},xaxis:{title:{text:'logit change per unit'}}});
  const en=c.entered.map(p=>[short(IT[p[0]]),p[1]]), lf=c.left.map(p=>[short(IT[p[0]]),-p[1]]);
  if(!en.length&&!lf.length){card.querySelector('.rx-causal').textContent='No item entered or left these users\' top-'+D.k+' lists.';return;}
  plot(card.querySelector('.rx-causal'),[{type:'bar',orientation:'h',name:'enter',y:en.map(p=>p[0]),x:en.map(p=>p[1]),marker:{color:'#59a14f'}},{type:'bar',orientation:'h',name:'leave',y:lf.map(p=>p[0]),x:lf.map(p=>p[1]),marker:{color:'#e15759'}}],{margin:{l:170,r:10,t:10,b:36},showlegend:false,yaxis:{autorange:'reversed'},xaxis:{title:{text:'users (enter + / leave −)'}}});
}
q.addEventListener('input',rows); sortSel.addEventListener('change',rows); dead.addEventListener('change',rows);
tbody.addEventListener('click',e=>{const tr=e.target.closest('tr'); if(tr) open(+tr.dataset.id);});
rows();
const first=F.filter(f=>!f.dead).sort((a,b)=>(conf(b)??-1)-(conf(a)??-1)||b.density-a.density)[0];
if(first) open(first.id);
function fromHash(){
  const h=decodeURIComponent(location.hash.slice(1)), pre=ROOT_ID+'-';
  if(!h.startsWith(pre))return;
  const id=Number(h.slice(pre.length));
  if(Number.isInteger(id)&&F[id]&&F[id].id===id){open(id);card.scrollIntoView();}
}
window.addEventListener('hashchange',fromHash); fromHash();
})();
"""


def explorer_html(data: dict[str, Any], div_id: str = "feature-explorer") -> str:
    """Self-contained HTML + JS for one SAE's explorer (module docstring). ``div_id`` must be unique on the
    page (tests find the explorer by it). A link to ``#<div_id>-<feature id>`` (:func:`explorer_link`) opens
    that feature's card."""
    if not div_id.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"div_id must be letters, digits, '-' or '_', got {div_id!r}")
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    n_live = sum(not f.get("dead") for f in data["features"])
    return (
        f'<div id="{div_id}" class="recsae-explorer">'
        f"<style>{_CSS.replace('#ID', '#' + div_id)}</style>"
        f"<p><b>{html.escape(data.get('title', ''))}</b> — {len(data['features'])} features, {n_live} live. "
        "Click a row to open its card; search by label or id.</p>"
        '<div class="rx-controls"><input type="search" placeholder="Search features by label or #id" '
        'aria-label="search features">'
        '<label>sort <select aria-label="sort features"><option value="score">score (confidence)</option>'
        '<option value="density">density</option><option value="label">label</option>'
        '<option value="id">id</option></select></label>'
        '<label><input type="checkbox"> show dead</label><span class="rx-count rx-muted"></span></div>'
        '<div class="rx-list"><table class="rx-t"><thead><tr><th>#</th><th>label</th><th>confidence</th>'
        "<th>density</th></tr></thead><tbody></tbody></table></div>"
        '<div class="rx-card"></div>'
        f'<script type="application/json" id="{div_id}-data">{payload}</script>'
        f"<script>{_JS.replace('ROOT_ID', json.dumps(div_id))}</script></div>"
    )


def explorer_link(div_id: str, feature: int, text: str | None = None) -> str:
    """An HTML link that opens ``feature``'s card in the explorer ``div_id`` on the same page."""
    return f'<a href="#{html.escape(div_id)}-{int(feature)}">{html.escape(text or f"#{int(feature)}")}</a>'


def show_explorer(data: dict[str, Any], div_id: str = "feature-explorer") -> int:
    """Display :func:`explorer_html` (as ``text/html``) and return its size in bytes."""
    from IPython.display import HTML, display

    out = explorer_html(data, div_id)
    display(HTML(out))
    return len(out.encode())


def plot_score_distributions(scores: dict[str, pd.DataFrame]) -> Any:
    """Histograms of P2 confidence, hard-negative balanced accuracy and simulation correlation, one colour
    per SAE (``name -> score_latents frame``)."""
    import matplotlib.pyplot as plt
    import numpy as np

    cols = [
        ("confidence", "P2 confidence"),
        ("balanced_accuracy_hard", "detection: balanced accuracy (hard negatives)"),
        ("simulation", "simulation: Pearson r"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, (col, title) in zip(axes, cols, strict=True):
        bins = np.linspace(-1 if col == "simulation" else 0, 1, 21)
        for name, df in scores.items():
            ax.hist(df[col].dropna(), bins=bins, alpha=0.6, label=name)
        ax.set_title(title)
        ax.set_xlabel(col.replace("_", " "))
        ax.set_ylabel("latents")
    axes[0].legend(loc="upper left")
    return fig


_POPULARITY_COLUMNS = {
    "value": ("edit", "{:g}"),
    "hr@10": ("HR@10", "{:.4f}"),
    "ndcg@10": ("NDCG@10", "{:.4f}"),
    "avg_popularity": ("avg. popularity", "{:,.0f}"),
    "long_tail_share": ("long-tail share", "{:.3f}"),
    "coverage": ("coverage", "{:.3f}"),
    "gini": ("Gini", "{:.3f}"),
}


def popularity_table(
    curves: dict[str, pd.DataFrame], *, name: str = "model", caption: str | None = None
) -> Any:
    """The de-biasing table of :func:`recsae_core.exposure.popularity_tradeoff` curves (``name`` -> frame), one
    block of rows per curve, compact headers and per-column precision so that it fits the page; the base
    model's row (no edit) shows "base"."""
    from recsae_core.viz.base import table

    df = pd.concat([c.assign(**{name: n}) for n, c in curves.items()], ignore_index=True)
    cols = [c for c in _POPULARITY_COLUMNS if c in df.columns]
    out = df[[name, *cols]].rename(columns={c: _POPULARITY_COLUMNS[c][0] for c in cols})
    sty = table(out, index=False, caption=caption)
    fmt = {_POPULARITY_COLUMNS[c][0]: _POPULARITY_COLUMNS[c][1] for c in cols}
    return sty.format(fmt, na_rep="base")


def plot_popularity_tradeoff(curves: dict[str, pd.DataFrame], k: int = 10) -> Any:
    """NDCG@k against average recommended-item popularity and long-tail share as a popularity latent is
    suppressed (:func:`recsae_core.exposure.popularity_tradeoff`); the base model is the star."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, df in curves.items():
        base, steered = df[df["value"].isna()], df[df["value"].notna()]
        for ax, col, lab in (
            (axes[0], "avg_popularity", "avg. popularity of recommended items"),
            (axes[1], "long_tail_share", "long-tail share of slots"),
        ):
            (line,) = ax.plot(steered[col], steered[f"ndcg@{k}"], marker="o", label=name)
            ax.scatter(base[col], base[f"ndcg@{k}"], marker="*", s=160, color=line.get_color(), zorder=3)
            for _, r in steered.iterrows():
                ax.annotate(
                    f"{r['value']:g}",
                    (r[col], r[f"ndcg@{k}"]),
                    fontsize=8,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
            ax.set_xlabel(lab)
            ax.set_ylabel(f"NDCG@{k}")
    axes[0].legend(loc="best")
    axes[0].set_title("accuracy vs popularity (★ = base model)")
    axes[1].set_title("accuracy vs long tail (labels: edit strength)")
    return fig
