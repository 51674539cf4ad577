"""A sortable, filterable data table with a CSV download, inline and dependency-free.

The rows travel as JSON inside the page (``<script type="application/json">``) and are drawn
only when their ``<details>`` box is opened, so a report with many tables stays quick to
load. Clicking a header sorts by it (again: the other way; empty values always last);
typing in the filter keeps the rows whose shown text contains it (case-insensitive);
"Download CSV" saves the rows shown, with their full-precision values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cohortlens.reports.svg import esc

ColumnKind = Literal["text", "num", "pct", "bool"]


@dataclass(frozen=True)
class Column:
    """One table column.

    Attributes:
        key: the CSV header (machine name).
        label: the header shown (plain words, with the unit).
        kind: ``text``, ``num`` (shown with ``decimals``), ``pct`` (a share shown as a
            percentage with ``decimals``) or ``bool`` (yes / no).
        decimals: decimals shown for ``num`` and ``pct``.
        tip: a sentence explaining the column (shown on hover).
    """

    key: str
    label: str
    kind: ColumnKind = "num"
    decimals: int = 2
    tip: str = ""


def decimals_for_values(values: Sequence[float], digits: int = 3) -> int:
    """Decimals that show about ``digits`` significant digits of a column's typical value."""
    finite = sorted(abs(v) for v in values if v is not None and math.isfinite(v) and v != 0)
    if not finite or all(v == round(v) for v in finite):
        return 0
    median = finite[len(finite) // 2]
    return max(0, min(4, digits - 1 - math.floor(math.log10(median))))


def _cell(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def data_table(
    *,
    table_id: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[object]],
    file_name: str,
    sort_by: int = -1,
) -> str:
    """The table's tools (filter box, row count, CSV button) and the table, rows as JSON."""
    payload = {
        "columns": [{"key": c.key, "kind": c.kind, "decimals": c.decimals} for c in columns],
        "rows": [[_cell(v) for v in r] for r in rows],
        "sort": sort_by,
        "file": file_name,
    }
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    head = "".join(
        f'<th data-col="{i}" tabindex="0" aria-sort="none" class="{"text" if c.kind == "text" else "num"}"'
        + (f' title="{esc(c.tip)}"' if c.tip else "")
        + f">{esc(c.label)}</th>"
        for i, c in enumerate(columns)
    )
    return (
        f'<div class="dd-table" id="{esc(table_id)}">'
        '<div class="dd-tools"><label>Filter <input type="search" class="dd-filter" '
        'placeholder="text in any column" aria-label="filter rows"></label>'
        '<span class="dd-count"></span>'
        '<button type="button" class="dd-csv">Download CSV (rows shown)</button></div>'
        f'<div class="dd-scroll"><table><thead><tr>{head}</tr></thead><tbody></tbody>'
        f'</table></div><script type="application/json" class="dd-data">{data}</script></div>'
    )


#: Sorting, filtering and the CSV download of every ``data_table`` (drawn on first open).
TABLE_JS = r"""
(function(){
  function esc(s){return String(s).replace(/[&<>"]/g,function(c){
    return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c];});}
  function num(v,d){var s=Math.abs(v).toLocaleString('en-US',
    {minimumFractionDigits:d,maximumFractionDigits:d});
    return (v<0&&/[1-9]/.test(s)?'\u2212':'')+s;}
  function show(v,c){if(v===null||v===undefined){return '\u2013';}
    if(c.kind==='text'){return String(v);} if(c.kind==='bool'){return v?'yes':'no';}
    if(c.kind==='pct'){return num(100*v,c.decimals)+'\u00a0%';} return num(v,c.decimals);}
  function csvCell(v){if(v===null||v===undefined){return '';} var s=String(v);
    return /[",\n\r]/.test(s)?'"'+s.replace(/"/g,'""')+'"':s;}
  function init(box){
    var d=JSON.parse(box.querySelector('script.dd-data').textContent);
    var cols=d.columns,rows=d.rows,key=d.sort,dir=1,shown=[];
    var body=box.querySelector('tbody'),input=box.querySelector('input.dd-filter');
    var count=box.querySelector('.dd-count'),heads=box.querySelectorAll('th[data-col]');
    var texts=rows.map(function(r){return r.map(function(v,i){return show(v,cols[i]);})
      .join('\u0001').toLowerCase();});
    function draw(){
      var q=input.value.trim().toLowerCase();shown=[];
      for(var i=0;i<rows.length;i++){if(!q||texts[i].indexOf(q)>=0){shown.push(i);}}
      if(key>=0){shown.sort(function(a,b){var x=rows[a][key],y=rows[b][key];
        if(x===null&&y===null){return a-b;} if(x===null){return 1;} if(y===null){return -1;}
        return x<y?-dir:x>y?dir:a-b;});}
      var h=[];
      for(var k=0;k<shown.length;k++){var r=rows[shown[k]];h.push('<tr>');
        for(var j=0;j<r.length;j++){h.push('<td class="'+(cols[j].kind==='text'?'text':'num')+
          '">'+esc(show(r[j],cols[j]))+'</td>');} h.push('</tr>');}
      body.innerHTML=h.join('');
      count.textContent=shown.length.toLocaleString('en-US')+' of '+
        rows.length.toLocaleString('en-US')+' rows';
      heads.forEach(function(th){var c=+th.getAttribute('data-col');
        th.setAttribute('aria-sort',c===key?(dir>0?'ascending':'descending'):'none');});
    }
    heads.forEach(function(th){
      function sort(){var c=+th.getAttribute('data-col');
        if(c===key){dir=-dir;}else{key=c;dir=1;} draw();}
      th.addEventListener('click',sort);
      th.addEventListener('keydown',function(e){if(e.key==='Enter'){sort();}});
    });
    input.addEventListener('input',draw);
    box.querySelector('button.dd-csv').addEventListener('click',function(){
      var lines=[cols.map(function(c){return csvCell(c.key);}).join(',')];
      shown.forEach(function(i){lines.push(rows[i].map(csvCell).join(','));});
      var url=URL.createObjectURL(new Blob([lines.join('\r\n')+'\r\n'],{type:'text/csv'}));
      var a=document.createElement('a');a.href=url;a.download=d.file;
      document.body.appendChild(a);a.click();a.remove();
      setTimeout(function(){URL.revokeObjectURL(url);},1000);
    });
    draw();
  }
  document.querySelectorAll('details').forEach(function(det){
    det.addEventListener('toggle',function(){
      if(!det.open){return;}
      det.querySelectorAll('.dd-table').forEach(function(box){
        if(!box.getAttribute('data-ready')){box.setAttribute('data-ready','1');init(box);}
      });
    });
  });
})();
"""


__all__ = ["TABLE_JS", "Column", "data_table", "decimals_for_values"]
