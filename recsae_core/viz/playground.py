"""The steering playground's static view: :func:`playground_html` renders
:func:`recsae_core.playground.playground_data` as one ``<div>`` with the grid as embedded JSON and a small
vanilla script (no other library than the page's vendored plotly.js, no outside request, no kernel).

Controls: the SAE (dataset · model · site), a search box that filters the sampled features by words of their
description, the label their decoder atom steers towards, or ``#id`` (as the feature explorer's list), and the users (a group or one sampled user). The
figure: the label shares of the top-k at α = 0 and at the chosen α, NDCG@k and the feature's label share
against α, and below the top-k before → after (one user) or the items entering and leaving most lists (a
group). Its slider moves α; every α's traces are in the figure and the slider toggles their visibility.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["playground_html", "plot_grid_summary", "show_playground"]

_CSS = """
#ID{font-size:14px;border:1px solid #d0d7de;border-radius:6px;padding:10px;margin:8px 0}
#ID .pg-controls{display:flex;gap:10px;align-items:center;flex-wrap:wrap;margin-bottom:6px}
#ID .pg-controls select{max-width:420px}
#ID input[type=search]{flex:1;min-width:220px;padding:4px 8px;border:1px solid #aaa;border-radius:4px}
#ID .pg-list{max-height:190px;overflow-y:auto;border:1px solid #eee}
#ID table.pg-t{width:100%;border-collapse:collapse;margin:0}
#ID table.pg-t td,#ID table.pg-t th{padding:2px 6px;border-bottom:1px solid #f0f0f0;text-align:left;vertical-align:top}
#ID table.pg-t th{position:sticky;top:0;background:#f6f8fa}
#ID .pg-list tr.pg-row{cursor:pointer}
#ID .pg-list tr.pg-row:hover{background:#eef5ff}
#ID .pg-list tr.pg-sel{background:#dbeafe}
#ID .pg-num{text-align:right !important;font-variant-numeric:tabular-nums}
#ID .pg-muted{color:#666}
#ID .pg-title{font-size:15px;font-weight:bold;margin:8px 0 2px 0}
#ID .pg-summary{margin:2px 0 4px 0}
#ID .pg-plot{height:980px}
"""

_JS = r"""
(function(){
const root=document.getElementById(ROOT_ID);
const D=JSON.parse(document.getElementById(ROOT_ID+'-data').textContent);
const A=D.alphas, K=D.k, A0=A.indexOf(0);
const esc=s=>String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
const fmt=(x,d)=>x===null||x===undefined?'–':Number(x).toFixed(d===undefined?3:d);
const short=(s,n)=>s.length>n?s.slice(0,n-1)+'…':s;
const saeSel=root.querySelector('select.pg-sae'), whoSel=root.querySelector('select.pg-who'),
      q=root.querySelector('input[type=search]'), tbody=root.querySelector('tbody'),
      count=root.querySelector('.pg-count'), title=root.querySelector('.pg-title'),
      summary=root.querySelector('.pg-summary'), plotDiv=root.querySelector('.pg-plot');
let S=null, fid=null, cur=A0;
saeSel.innerHTML=D.saes.map((s,i)=>'<option value="'+i+'">'+esc(s.dataset+' · '+s.name)+'</option>').join('');
const aText=(f,i)=>D.alpha_unit==='max_act'?A[i]+' × max activation (+'+fmt(A[i]*f.unit,3)+')':String(A[i]);
function feature(){return S.features.find(f=>f.id===fid);}
function setSae(i){
  S=D.saes[+i];
  whoSel.innerHTML='<optgroup label="groups">'+S.groups.map((g,j)=>'<option value="g'+j+'">'+esc(g.name)+' ('+g.n+')</option>').join('')+'</optgroup>'+
    '<optgroup label="one user (recent history)">'+S.users.map((u,j)=>'<option value="u'+j+'">user '+esc(u.id)+' ('+u.n_hist+' items)</option>').join('')+'</optgroup>';
  fid=S.features[0].id; rows(); draw();
}
function rows(){
  const s=q.value.trim().toLowerCase();
  const L=S.features.filter(f=>!s||('#'+f.id+' '+f.description+' '+f.steers).toLowerCase().includes(s));
  count.textContent=L.length+' of '+S.features.length+' sampled features ('+S.n_live+' live of '+S.n_latents+')';
  tbody.innerHTML=L.map(f=>'<tr class="pg-row'+(f.id===fid?' pg-sel':'')+'" data-id="'+f.id+'"><td class="pg-num">'+f.id+'</td><td>'+esc(f.description)+'</td><td>'+esc(f.steers)+'</td><td class="pg-num">'+fmt(f.confidence,2)+'</td><td class="pg-num">'+(100*f.density).toFixed(1)+'%</td></tr>').join('');
}
function itemsTable(a,f,names){
  const has=i=>S.item_labels[i].includes(f.label)?'#fde2b8':'white';
  const labs=i=>short(S.item_labels[i].map(g=>names[g]).slice(0,3).join(', '),30);
  const who=whoSel.value;
  if(who[0]==='u'){
    const u=f.users[+who.slice(1)], b=u.top[A0], t=u.top[a];
    return {type:'table',domain:{x:[0,1],y:[0,0.47]},columnwidth:[0.5,3.6,2.2,3.6,2.2],
      header:{values:['#','before (α = 0): title','labels','α = '+A[a]+': title','labels'],fill:{color:'#e8eef7'},align:'left',font:{size:11}},
      cells:{values:[b.map((_,r)=>r+1),b.map(i=>short(S.items[i],38)),b.map(labs),t.map(i=>short(S.items[i],38)),t.map(labs)],
        fill:{color:[b.map(()=>'white'),b.map(has),b.map(has),t.map(has),t.map(has)]},align:'left',font:{size:10},height:22}};
  }
  const g=f.groups[+who.slice(1)], e=g.entered[a], l=g.left[a];
  const n=Math.max(e.length,l.length,1), none=a===A0?'(α = 0: the base model’s lists)':'(none)';
  const pad=(x,fn,first)=>Array.from({length:n},(_,r)=>r<x.length?fn(x[r]):(r===0&&first?none:''));
  const padc=(x,fn)=>Array.from({length:n},(_,r)=>r<x.length?fn(x[r]):'white');
  return {type:'table',domain:{x:[0,1],y:[0,0.47]},columnwidth:[3.6,1.1,3.6,1.1],
    header:{values:['entering at α = '+A[a]+': title','lists','leaving: title','lists'],fill:{color:'#e8eef7'},align:'left',font:{size:11}},
    cells:{values:[pad(e,p=>short(S.items[p[0]],44),1),pad(e,p=>p[1]),pad(l,p=>short(S.items[p[0]],44),1),pad(l,p=>p[1])],
      fill:{color:[padc(e,p=>has(p[0])),padc(e,()=>'white'),padc(l,p=>has(p[0])),padc(l,()=>'white')]},align:'left',font:{size:10},height:22}};
}
function stats(f){
  const who=whoSel.value;
  if(who[0]==='u'){
    const u=f.users[+who.slice(1)];
    const share=u.top.map(t=>{const s=new Array(D.label_names[S.dataset].length).fill(0);t.forEach(i=>S.item_labels[i].forEach(g=>s[g]+=1/t.length));return s;});
    return {share:share,ndcg:u.ndcg,who:'user '+S.users[+who.slice(1)].id};
  }
  const g=f.groups[+who.slice(1)];
  return {share:g.share,ndcg:g.ndcg,who:S.groups[+who.slice(1)].name};
}
function say(f,st,a){
  const names=D.label_names[S.dataset], lab=names[f.label];
  summary.innerHTML='<b>α = '+esc(aText(f,a))+'</b> for '+esc(st.who)+': '+esc(lab)+' share of the top-'+K+' '+fmt(st.share[A0][f.label])+' → <b>'+fmt(st.share[a][f.label])+'</b>; NDCG@'+K+' '+fmt(st.ndcg[A0],4)+' → <b>'+fmt(st.ndcg[a],4)+'</b>.';
}
function draw(){
  const f=feature(); if(!f) return;
  tbody.querySelectorAll('tr').forEach(tr=>tr.classList.toggle('pg-sel',+tr.dataset.id===fid));
  const names=D.label_names[S.dataset], st=stats(f), lab=names[f.label];
  title.textContent='Feature #'+f.id+': '+f.description;
  const col=names.map((_,g)=>g===f.label?'#d95f02':'#fdae61');
  const traces=[{type:'bar',x:names,y:st.share[A0],name:'α = 0 (base model)',marker:{color:'#9e9e9e'},xaxis:'x',yaxis:'y'}];
  A.forEach((a,i)=>traces.push({type:'bar',x:names,y:st.share[i],name:'α = '+a,marker:{color:col},xaxis:'x',yaxis:'y',visible:i===cur}));
  traces.push({type:'scatter',mode:'lines+markers',x:A,y:st.ndcg,name:'NDCG@'+K,line:{color:'#d62728',dash:'dot'},xaxis:'x2',yaxis:'y2'});
  traces.push({type:'scatter',mode:'lines+markers',x:A,y:st.share.map(s=>s[f.label]),name:short(lab,18)+' share',line:{color:'#1f77b4'},xaxis:'x2',yaxis:'y3'});
  A.forEach((a,i)=>traces.push({type:'scatter',mode:'markers',x:[a],y:[st.share[i][f.label]],marker:{size:14,color:'#ff7f0e'},showlegend:false,name:'α = '+a+' marker',xaxis:'x2',yaxis:'y3',visible:i===cur}));
  A.forEach((a,i)=>{const t=itemsTable(i,f,names);t.visible=i===cur;t.name='top-'+K+' at α = '+a;traces.push(t);});
  const nA=A.length, fixed=[0,nA+1,nA+2];
  const steps=A.map((a,i)=>{const vis=traces.map((_,j)=>fixed.includes(j)||j===1+i||j===nA+3+i||j===2*nA+3+i);return {label:String(a),method:'update',args:[{visible:vis}]};});
  const unit=D.alpha_unit==='max_act'?' (× max activation '+fmt(f.unit,3)+')':'';
  const layout={
    height:980,margin:{l:60,r:60,t:40,b:20},barmode:'group',font:{size:11},
    legend:{orientation:'h',x:0,y:1.05},
    xaxis:{domain:[0,0.56],anchor:'y',tickangle:-45,tickfont:{size:9}},
    yaxis:{domain:[0.68,1],anchor:'x',rangemode:'tozero',title:{text:'share of top-'+K}},
    xaxis2:{domain:[0.68,1],anchor:'y2',title:{text:'α'+unit}},
    yaxis2:{domain:[0.68,1],anchor:'x2',rangemode:'tozero',title:{text:'NDCG@'+K,font:{color:'#d62728'}}},
    yaxis3:{overlaying:'y2',side:'right',anchor:'x2',rangemode:'tozero',title:{text:short(lab,14)+' share',font:{color:'#1f77b4'}}},
    sliders:[{active:cur,currentvalue:{prefix:'α = '},steps:steps,y:0.575,yanchor:'top',pad:{t:0},len:1}]
  };
  const go=()=>{
    if(!window.Plotly){setTimeout(go,200);return;}
    window.Plotly.react(plotDiv,traces,layout,{displayModeBar:false,responsive:true});
    if(!plotDiv.dataset.pgBound){plotDiv.dataset.pgBound='1';plotDiv.on('plotly_sliderchange',e=>{cur=A.indexOf(+e.step.label);const f2=feature();say(f2,stats(f2),cur);});}
  };
  go(); say(f,st,cur);
}
saeSel.addEventListener('change',()=>setSae(saeSel.value));
whoSel.addEventListener('change',draw);
q.addEventListener('input',rows);
tbody.addEventListener('click',e=>{const tr=e.target.closest('tr'); if(tr){fid=+tr.dataset.id; draw();}});
setSae(0);
})();
"""


def playground_html(data: dict[str, Any], div_id: str = "steering-playground") -> str:
    """Self-contained HTML + JS for :func:`recsae_core.playground.playground_data` (module docstring).
    ``div_id`` must be unique on the page (tests find the playground by it; the figure is ``<div_id>-plot``)."""
    if not div_id.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"div_id must be letters, digits, '-' or '_', got {div_id!r}")
    if not data.get("saes"):
        raise ValueError("playground data holds no SAE (playground_data builds it)")
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    n_feat = sum(len(s["features"]) for s in data["saes"])
    return (
        f'<div id="{div_id}" class="recsae-playground">'
        f"<style>{_CSS.replace('#ID', '#' + div_id)}</style>"
        f"<p>{len(data['saes'])} SAEs, {n_feat} sampled features, α ∈ {{{', '.join(f'{a:g}' for a in data['alphas'])}}}"
        f"{' × the feature’s max activation' if data.get('alpha_unit') == 'max_act' else ''}. "
        "Choose an SAE and users, search and click a feature, then move the slider.</p>"
        '<div class="pg-controls"><label>SAE <select class="pg-sae" aria-label="SAE"></select></label>'
        '<label>users <select class="pg-who" aria-label="users"></select></label></div>'
        '<div class="pg-controls"><input type="search" placeholder="Search features by description, genre or #id" '
        'aria-label="search features"><span class="pg-count pg-muted"></span></div>'
        '<div class="pg-list"><table class="pg-t"><thead><tr><th>#</th><th>description (metadata explainer)</th>'
        "<th>atom steers</th><th>confidence</th><th>density</th></tr></thead><tbody></tbody></table></div>"
        '<div class="pg-title"></div><div class="pg-summary"></div>'
        f'<div class="pg-plot" id="{div_id}-plot"></div>'
        f'<script type="application/json" id="{div_id}-data">{payload}</script>'
        f"<script>{_JS.replace('ROOT_ID', json.dumps(div_id))}</script></div>"
    )


def show_playground(data: dict[str, Any], div_id: str = "steering-playground") -> int:
    """Display :func:`playground_html` (as ``text/html``) and return its size in bytes."""
    from IPython.display import HTML, display

    out = playground_html(data, div_id)
    display(HTML(out))
    return len(out.encode())


def plot_grid_summary(summary: Any) -> Any:
    """Each sampled feature as a point: how much steering at the largest α raises its label's share of the
    top-k (x) against the change of NDCG@k (y), one colour per SAE
    (:func:`recsae_core.playground.grid_summary`)."""
    import matplotlib.pyplot as plt

    share0 = summary["share α=0"]
    share1 = summary[next(c for c in summary.columns if c.startswith("share α=") and c != "share α=0")]
    n0 = summary["NDCG α=0"]
    n1 = summary[next(c for c in summary.columns if c.startswith("NDCG α=") and c != "NDCG α=0")]
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    for name, idx in summary.groupby("SAE").groups.items():
        ax.scatter(share1[idx] - share0[idx], n1[idx] - n0[idx], label=name, s=40, alpha=0.8)
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("rise of the feature's label share in the top-10 (largest α − α = 0)")
    ax.set_ylabel("NDCG@10 change (largest α − α = 0)")
    ax.set_title("Sampled features steered at the largest α (all sampled users)")
    ax.legend(loc="best")
    return fig
