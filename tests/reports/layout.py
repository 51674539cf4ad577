"""What the layout tests measure in the browser: every text element of a rendered page.

``LAYOUT_CHECK`` (a JavaScript expression) returns a dict:

* ``problems``: one line per violation, naming the text and the rule:
  - an SVG ``<text>`` whose box leaves its SVG's viewBox;
  - an HTML text line outside its container (the nearest non-inline ancestor), or hidden by
    an ancestor that clips it sideways (``overflow`` other than visible);
  - two text boxes that overlap (by more than half a pixel both ways);
  - a text ending in an ellipsis ("…" or "..."), or an element cut with
    ``text-overflow: ellipsis``;
  - a map point (``circle.pt``) not strictly inside its plot area (``rect.plot-area``);
  - a chart (``svg.chart``) without a horizontal and a vertical axis title;
  - a page wider than the window (horizontal scrolling).
* ``texts``, ``charts``, ``points``: how many were checked (so a test can tell an empty
  page from a clean one).
"""

from __future__ import annotations

from typing import Any

LAYOUT_CHECK = r"""
(function(){
  var problems=[], boxes=[], T=0.5;
  function short(s){s=s.replace(/\s+/g,' ').trim();return s.length>60?s.slice(0,60)+'[cut]':s;}
  function shown(el){var s=getComputedStyle(el);return s.display!=='none'&&s.visibility!=='hidden';}
  function inside(r,b,tol){return r.left>=b.left-tol&&r.right<=b.right+tol&&
    r.top>=b.top-tol&&r.bottom<=b.bottom+tol;}
  function ellipsis(text,where){var t=text.trim();
    if(/(\u2026|\.\.\.)$/.test(t)){problems.push('ellipsis: "'+short(t)+'" in '+where);}}
  // SVG text: inside the viewBox
  var svgTexts=document.querySelectorAll('svg text');
  svgTexts.forEach(function(t){
    var r=t.getBoundingClientRect(); if(r.width===0&&r.height===0){return;}
    var svg=t.ownerSVGElement, vb=svg.viewBox.baseVal, b=t.getBBox();
    var m=t.getCTM(), sm=svg.getCTM();
    // the text's box in the SVG's user space (handles rotated axis titles)
    var pts=[[b.x,b.y],[b.x+b.width,b.y],[b.x,b.y+b.height],[b.x+b.width,b.y+b.height]].map(
      function(p){var q=svg.createSVGPoint();q.x=p[0];q.y=p[1];
        q=q.matrixTransform(sm.inverse().multiply(m));return q;});
    var xs=pts.map(function(p){return p.x;}), ys=pts.map(function(p){return p.y;});
    var box={left:Math.min.apply(null,xs),right:Math.max.apply(null,xs),
      top:Math.min.apply(null,ys),bottom:Math.max.apply(null,ys)};
    if(!inside(box,{left:vb.x,right:vb.x+vb.width,top:vb.y,bottom:vb.y+vb.height},T)){
      problems.push('outside its chart: "'+short(t.textContent)+'" in '+svg.getAttribute('aria-label'));}
    ellipsis(t.textContent,'chart '+svg.getAttribute('aria-label'));
    boxes.push({r:r,id:'svg:'+short(t.textContent),el:t});
  });
  // HTML text: line boxes inside their container and every clipping ancestor
  var walker=document.createTreeWalker(document.body,NodeFilter.SHOW_TEXT,{acceptNode:function(n){
    var p=n.parentElement; if(!p||!n.textContent.trim()){return NodeFilter.FILTER_REJECT;}
    if(p.closest('svg,script,style,#tip')){return NodeFilter.FILTER_REJECT;}
    return NodeFilter.FILTER_ACCEPT;}});
  var n, k=0;
  while((n=walker.nextNode())){
    var el=n.parentElement; if(!shown(el)){continue;}
    var range=document.createRange(); range.selectNodeContents(n);
    var rects=Array.prototype.filter.call(range.getClientRects(),function(r){return r.width>0&&r.height>0;});
    if(!rects.length){continue;}
    var box=el; while(box&&getComputedStyle(box).display==='inline'){box=box.parentElement;}
    var cb=box.getBoundingClientRect();
    var clips=[], a=el;
    while(a&&a!==document.body){var s=getComputedStyle(a);
      if(s.overflowX!=='visible'){clips.push({el:a,vertical:s.overflowY!=='hidden'&&a.classList.contains('dd-scroll')});}
      if(s.textOverflow==='ellipsis'&&a.scrollWidth>a.clientWidth+1){
        problems.push('cut with an ellipsis: "'+short(a.textContent)+'"');}
      a=a.parentElement;}
    ellipsis(n.textContent,'<'+el.tagName.toLowerCase()+'>');
    rects.forEach(function(r){
      if(!inside(r,cb,1)){problems.push('outside its box: "'+short(n.textContent)+'" ('+
        Math.round(r.right-cb.right)+' px right, '+Math.round(cb.left-r.left)+' px left)');}
      var vis={left:r.left,right:r.right,top:r.top,bottom:r.bottom};
      clips.forEach(function(c){var b=c.el.getBoundingClientRect();
        var lim=c.vertical?{left:b.left,right:b.right,top:-1e9,bottom:1e9}:b;
        if(!inside(r,lim,1)){problems.push('clipped: "'+short(n.textContent)+'"');}
        if(c.vertical){vis.top=Math.max(vis.top,b.top);vis.bottom=Math.min(vis.bottom,b.bottom);}});
      // rows scrolled out of a table's scroll box are not on screen: only the visible part counts
      if(vis.bottom-vis.top>T){boxes.push({r:vis,id:'html'+(k)+':'+short(n.textContent),el:el});}
    });
    k++;
  }
  // overlaps between any two text boxes (sweep over rows)
  boxes.sort(function(a,b){return a.r.top-b.r.top;});
  var overlaps=0;
  for(var i=0;i<boxes.length;i++){
    for(var j=i+1;j<boxes.length&&boxes[j].r.top<boxes[i].r.bottom-T;j++){
      var p=boxes[i], q=boxes[j]; if(p.id===q.id){continue;}
      var w=Math.min(p.r.right,q.r.right)-Math.max(p.r.left,q.r.left);
      var h=Math.min(p.r.bottom,q.r.bottom)-Math.max(p.r.top,q.r.top);
      if(w>T&&h>T&&overlaps<40){overlaps++;
        problems.push('overlap: "'+p.id+'" and "'+q.id+'" ('+w.toFixed(1)+' x '+h.toFixed(1)+' px)');}
    }
  }
  // map points strictly inside the plot area
  var points=0;
  document.querySelectorAll('svg').forEach(function(svg){
    var area=svg.querySelector('rect.plot-area'); if(!area){return;}
    var x=+area.getAttribute('x'),y=+area.getAttribute('y'),
        w=+area.getAttribute('width'),h=+area.getAttribute('height');
    svg.querySelectorAll('circle.pt').forEach(function(c){points++;
      var cx=+c.getAttribute('cx'),cy=+c.getAttribute('cy'),r=+c.getAttribute('r');
      if(!(cx-r>x&&cx+r<x+w&&cy-r>y&&cy+r<y+h)){
        problems.push('map point on or beyond the plot edge at ('+cx+', '+cy+')');}});
  });
  // axis titles on every chart
  var charts=document.querySelectorAll('svg.chart');
  charts.forEach(function(svg){
    ['x','y'].forEach(function(a){var t=svg.querySelector('.axis-title.'+a);
      if(!t||!t.textContent.trim()){problems.push('no '+a+' axis title: '+svg.getAttribute('aria-label'));}});
  });
  if(document.documentElement.scrollWidth>window.innerWidth){
    problems.push('page wider than the window: '+document.documentElement.scrollWidth+' px');}
  return {problems:problems.slice(0,80),n_problems:problems.length,texts:boxes.length,
    charts:charts.length,points:points};
})()
"""

#: Open every ``<details>`` (drill-down tables) and wait until their rows are drawn.
OPEN_ALL = r"""
new Promise(function(done){
  document.querySelectorAll('details').forEach(function(d){d.open=true;});
  setTimeout(function(){done(document.querySelectorAll('details[open] tbody tr').length);},100);
})
"""


def describe(result: dict[str, Any]) -> str:
    """The problems as one readable block."""
    return f"{result['n_problems']} layout problems:\n" + "\n".join(result["problems"])
