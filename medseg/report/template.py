"""The report's HTML template and stylesheet, kept in Python so the package needs no data files.

Rendered with Jinja2 and autoescaping on: case ids, label names and notes come from user files and
are always escaped. No scripts, fonts or links outside the file: the report opens offline, in an
e-mail, or in a hospital viewer that blocks external requests, and prints as it looks.
"""

from __future__ import annotations

CSS = """
:root { --ink:#1d2433; --muted:#5b6475; --line:#d9dee7; --soft:#f4f6fa; --accent:#2f5c9a; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Liberation Sans", "DejaVu Sans", sans-serif; color:var(--ink); background:#fff; }
main { max-width: 1320px; margin: 0 auto; padding: 18px 28px 40px; }
h1 { font-size: 26px; margin: 8px 0 2px; }
h2 { font-size: 20px; margin: 30px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--accent); }
h3 { font-size: 15px; margin: 18px 0 6px; }
p { margin: 6px 0; }
.subtitle { color: var(--muted); margin: 0 0 10px; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 10px; margin: 6px 0; }
.phi { background: #fdecea; border-left: 4px solid #c62828; padding: 6px 10px; margin: 6px 0; font-weight: 600; }
.explain { color: var(--muted); font-size: 13px; max-width: 1100px; }
nav { font-size: 13px; margin: 8px 0 4px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
a { color: var(--accent); }
.columns { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
.columns > div { flex: 1 1 420px; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 7px; vertical-align: top; }
th { background: var(--soft); text-align: left; font-weight: 600; white-space: nowrap; }
table.kv th { width: 210px; background: none; color: var(--muted); font-weight: 500; }
table.kv td { max-width: 560px; overflow-wrap: anywhere; }
table.metrics td.num, table.data td.num { text-align: right; white-space: nowrap; }
table.metrics th.group { text-align: center; border-left: 2px solid #fff; }
table.metrics td.first, table.metrics th.first { border-left: 1px solid var(--line); }
table.metrics td.ci, table.metrics td.med { color: var(--muted); }
table.metrics tbody tr:nth-child(even) td:not([style]), table.data tbody tr:nth-child(even) td { background: #fafbfd; }
td.label { font-weight: 600; white-space: nowrap; }
.scroll { overflow-x: auto; max-width: 100%; }
.plots { display: flex; flex-wrap: wrap; gap: 10px 18px; }
.plots img { max-width: 100%; height: auto; }
figure { margin: 10px 0 22px; break-inside: avoid; page-break-inside: avoid; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figure .views { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
figcaption { font-size: 12.5px; color: var(--muted); max-width: 1150px; }
figcaption b { color: var(--ink); }
.case-title { font-size: 14px; font-weight: 600; margin-bottom: 3px; }
details { margin: 6px 0; font-size: 13px; }
summary { cursor: pointer; color: var(--accent); }
dl.conventions dt { font-weight: 600; margin-top: 6px; }
dl.conventions dd { margin: 0 0 0 14px; color: var(--muted); font-size: 13px; }
footer { margin-top: 34px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
@media print {
  main { max-width: none; padding: 0; }
  nav { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  .scroll { overflow: visible; }
  table { font-size: 10px; }
}
@page { size: A4 landscape; margin: 12mm; }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="medseg {{ version }}">
<title>{{ title }}</title>
<style>{{ css|safe }}</style>
</head>
<body>
<main>
<header>
<h1 id="top">{{ title }}</h1>
<p class="subtitle">{{ n_cases }} case(s) &middot; {{ n_shown }} label(s) shown &middot; medseg {{ version }} &middot; report generated {{ generated }}</p>
{% if include_phi %}<p class="phi">This report contains identifying information (input paths{% if phi_cases %}, DICOM patient/study fields{% endif %}) because it was built with --include-phi. Do not share it outside the care team.</p>{% endif %}
{% for note in notes %}<p class="note">{{ note }}</p>
{% endfor %}
<nav><a href="#summary">Dataset and model</a><a href="#per-label">Per-label metrics</a>{% if cross_validation %}<a href="#cross-validation">Cross-validation</a>{% endif %}<a href="#plots">Distributions</a>{% if brats %}<a href="#brats">BraTS lesion-wise</a>{% endif %}{% if lesions %}<a href="#lesions">Lesion detection</a>{% endif %}<a href="#worst">Worst cases</a><a href="#cases">Case overlays</a><a href="#methods">Methods</a></nav>
</header>

<section id="summary">
<h2>Dataset and model</h2>
<div class="columns">
<div>
<h3>Evaluation</h3>
<table id="dataset-summary" class="kv"><tbody>
{% for key, value in dataset_facts %}<tr><th>{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}</tbody></table>
</div>
<div>
<h3>Model</h3>
{% if model_facts %}<table id="model-summary" class="kv"><tbody>
{% for key, value in model_facts %}<tr><th>{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}</tbody></table>
{% else %}<p class="explain" id="model-summary">No model information: pass <code>--model RUN_FOLDER</code> (a medseg run folder or checkpoint) to list the network, training settings and validation scores.</p>{% endif %}
</div>
</div>
</section>

<section id="per-label">
<h2>Per-label metrics</h2>
<p class="explain">{% if single %}A single case: its values are shown (SD, IQR and confidence intervals need at least 2 cases).{% else %}Over the {{ n_cases }} cases: mean &plusmn; SD, median (IQR Q1&ndash;Q3) and the percentile-bootstrap {{ confidence }} CI of the mean
({{ bootstrap }} resamples).{% endif %} <b>cases</b> = cases where the label is present in the prediction or the reference;
where it is absent from both, Dice and IoU count as 1 and distances are undefined (left out), as in summary.json.
{% if hidden_labels %}{{ hidden_labels|length }} label(s) absent from every case in both maps are not listed (they would only add Dice = 1 rows).{% endif %}
<b>one map empty</b> = cases where only the prediction or only the reference has the label: Dice 0 there, and distances capped at the {{ cap }}.</p>
{% for table in tables %}
<h3>{{ table.title }}</h3>
<div class="scroll">
<table id="{{ table.id }}" class="metrics">
<thead>
{% if single %}<tr><th>label</th><th>value</th><th>cases</th><th>one map<br>empty</th>{% if table.show_tolerance %}<th>NSD &tau; (mm)</th>{% endif %}
{% for column in table.columns %}<th class="first">{{ column.title }}{% if column.key == "nsd" and not table.show_tolerance %} (&tau; = {{ tolerance }} mm){% endif %}</th>{% endfor %}</tr>
{% else %}<tr><th rowspan="2">label</th><th rowspan="2">value</th><th rowspan="2">cases</th><th rowspan="2">one map<br>empty</th>{% if table.show_tolerance %}<th rowspan="2">NSD &tau; (mm)</th>{% endif %}
{% for column in table.columns %}<th colspan="3" class="group first">{{ column.title }}{% if column.key == "nsd" and not table.show_tolerance %} (&tau; = {{ tolerance }} mm){% endif %}</th>{% endfor %}</tr>
<tr>{% for column in table.columns %}<th class="first">mean &plusmn; SD</th><th>median (IQR)</th><th>{{ confidence }} CI</th>{% endfor %}</tr>{% endif %}
</thead>
<tbody>
{% for row in table.rows %}<tr><td class="label">{{ row.label }}</td><td class="num">{{ row.index }}</td><td class="num">{{ row.cases }}</td><td class="num">{{ row.one_sided }}</td>{% if table.show_tolerance %}<td class="num">{{ row.tolerance }}</td>{% endif %}
{% for cell in row.cells %}<td class="num first"{% if cell.tint %} style="background: {{ cell.tint }}"{% endif %}>{{ cell.mean_sd }}</td>{% if not single %}<td class="num med">{{ cell.median_iqr }}</td><td class="num ci">{{ cell.ci }}</td>{% endif %}{% endfor %}</tr>
{% endfor %}</tbody>
</table>
</div>
{% endfor %}
{% if hidden_labels %}<details><summary>{{ hidden_labels|length }} label(s) not listed (absent from every case in both maps)</summary><p>{{ hidden_labels|join(", ") }}</p></details>{% endif %}
</section>

{% if cross_validation %}<section id="cross-validation">
<h2>Cross-validation</h2>
<p class="explain">Each fold's held-out predictions (the final weights, no postprocessing), summarised per fold and pooled over every fold's cases. {{ cross_validation.convention }}.</p>
<div class="scroll">
<table id="cross-validation-table" class="data">
<thead><tr>{% for column in cross_validation.header %}<th>{{ column }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in cross_validation.rows %}<tr>{% for cell in row %}<td{% if not loop.first %} class="num"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
</div>
</section>{% endif %}

<section id="plots">
<h2>Distributions per label</h2>
<p class="explain">One dot per case (jittered sideways), white diamond = mean; boxes (median, quartiles, whiskers to 1.5 IQR) where a label has at least 3 cases.
Cases where the label is absent from both maps are not plotted. Axes switch to a symmetric log scale when a few values (e.g. capped distances) dwarf the rest.</p>
<div class="plots">
{% for plot in plots %}<img src="{{ plot.uri }}" id="plot-{{ plot.metric }}" alt="{{ plot.title }} per label">
{% endfor %}</div>
</section>

{% if brats %}
<section id="brats">
<h2>BraTS lesion-wise scores</h2>
<p class="explain">As the BraTS 2023 challenge scores them: per region, reference lesions are 26-connected components, joined when they touch after dilating the reference
{{ brats.regions[0].dilation }} time(s); a predicted component touching a dilated lesion belongs to it; reference lesions of at most {{ brats.regions[0].min_volume }} mm&sup3; are left out of the scores;
every false-positive component and every missed lesion counts Dice 0 and HD95 {{ brats.regions[0].penalty }} mm. Lesion-wise scores are per case (summed over its lesions and false positives),
then {% if single %}shown for the single case{% else %}mean &plusmn; SD over cases with the {{ confidence }} bootstrap CI{% endif %}. <b>Dice</b>, <b>HD95</b> and <b>NSD</b> are the whole-region (legacy) scores.
TP/FP/FN are lesion counts pooled over cases.</p>
<div class="scroll">
<table id="brats-regions" class="metrics">
<thead><tr><th rowspan="2">region</th><th rowspan="2">cases</th>{% for column in brats.columns %}<th {% if not single %}colspan="2" {% endif %}class="group first">{{ column.title }}</th>{% endfor %}<th rowspan="2">TP</th><th rowspan="2">FP</th><th rowspan="2">FN</th></tr>
<tr>{% for column in brats.columns %}<th class="first">{% if single %}value{% else %}mean &plusmn; SD{% endif %}</th>{% if not single %}<th>{{ confidence }} CI</th>{% endif %}{% endfor %}</tr></thead>
<tbody>
{% for row in brats.regions %}<tr><td class="label">{{ row.label }}</td><td class="num">{{ row.cases }}</td>{% for cell in row.cells %}<td class="num first"{% if cell.tint %} style="background: {{ cell.tint }}"{% endif %}>{{ cell.mean_sd }}</td>{% if not single %}<td class="num ci">{{ cell.ci }}</td>{% endif %}{% endfor %}<td class="num">{{ row.tp }}</td><td class="num">{{ row.fp }}</td><td class="num">{{ row.fn }}</td></tr>
{% endfor %}</tbody>
</table>
</div>
<h3>Reference lesions, worst first</h3>
<p class="explain">{{ brats.lesions|length }} of {{ brats.lesions_total }} reference lesion(s): missed ones first, then by lesion Dice (set report.brats_lesions_listed for more).</p>
{% if brats.lesions %}<div class="scroll"><table id="brats-lesions" class="data"><thead><tr><th>case</th><th>region</th><th>lesion</th><th>volume (mL)</th><th>scored</th><th>prediction</th><th>Dice</th><th>HD95 (mm)</th></tr></thead><tbody>
{% for row in brats.lesions %}<tr><td><a href="#{{ anchors.get(row.case, 'cases') }}">{{ row.case }}</a></td><td>{{ row.label }}</td><td class="num">{{ row.lesion }}</td><td class="num">{{ row.volume_ml }}</td><td>{{ row.counted }}</td><td>{{ row.status }}</td><td class="num">{{ row.dice }}</td><td class="num">{{ row.hd95 }}</td></tr>
{% endfor %}</tbody></table></div>{% endif %}
<h3>False-positive components</h3>
{% if brats.false_positives %}<div class="scroll"><table id="brats-false-positives" class="data"><thead><tr><th>case</th><th>region</th><th>components</th><th>total volume (mL)</th><th>largest (mL)</th></tr></thead><tbody>
{% for row in brats.false_positives %}<tr><td><a href="#{{ anchors.get(row.case, 'cases') }}">{{ row.case }}</a></td><td>{{ row.label }}</td><td class="num">{{ row.count }}</td><td class="num">{{ row.total_ml }}</td><td class="num">{{ row.largest_ml }}</td></tr>
{% endfor %}</tbody></table></div>{% else %}<p class="explain">None: every predicted component touches a reference lesion.</p>{% endif %}
</section>
{% endif %}

{% if lesions %}
<section id="lesions">
<h2>Lesion detection</h2>
<p class="explain">Lesions are 3D connected components ({{ connectivity }}-connectivity). A reference lesion is detected when a predicted component overlaps it
(&ge; {{ min_overlap }} voxel(s){% if iou_threshold > 0 %}, IoU &ge; {{ iou_threshold }}{% endif %}{% if dilation > 0 %}, after dilating it by {{ dilation }} voxel(s){% endif %});
unmatched predicted components are false positives. Counts are pooled over cases; lesion-wise Dice is BraTS-2023 style (missed and false-positive lesions count 0), mean &plusmn; SD over cases.</p>
<div class="scroll">
<table id="lesion-detection" class="data">
<thead><tr><th>label</th><th>cases</th><th>reference lesions</th><th>predicted lesions</th><th>TP</th><th>FN</th><th>FP</th><th>sensitivity</th><th>precision</th><th>F1</th><th>FP per case</th><th>lesion-wise Dice</th><th>{{ confidence }} CI</th></tr></thead>
<tbody>
{% for row in lesions %}<tr><td class="label">{{ row.label }}</td><td class="num">{{ row.cases }}</td><td class="num">{{ row.lesions_ref }}</td><td class="num">{{ row.lesions_pred }}</td><td class="num">{{ row.tp }}</td><td class="num">{{ row.fn }}</td><td class="num">{{ row.fp }}</td><td class="num">{{ row.sensitivity }}</td><td class="num">{{ row.precision }}</td><td class="num">{{ row.f1 }}</td><td class="num">{{ row.fp_per_case }}</td><td class="num">{{ row.lesion_dice }}</td><td class="num">{{ row.lesion_dice_ci }}</td></tr>
{% endfor %}</tbody>
</table>
</div>
{% if size_plot %}<h3>Sensitivity by reference lesion size</h3>
<p class="explain">Bars: detected / reference lesions per volume bin (labels above the bars); error bars: Wilson 95% interval. Bins: [lower, upper) mL.</p>
<img src="{{ size_plot }}" id="plot-size-bins" alt="sensitivity by lesion size">{% endif %}
<div class="columns">
<div>
<h3>Largest missed reference lesions</h3>
{% if missed %}<table id="missed-lesions" class="data"><thead><tr><th>case</th><th>label</th><th>lesion</th><th>volume (mL)</th><th>long axis (mm)</th><th>short axis (mm)</th></tr></thead><tbody>
{% for row in missed %}<tr><td><a href="#{{ anchors.get(row.case, 'cases') }}">{{ row.case }}</a></td><td>{{ row.label }}</td><td class="num">{{ row.lesion }}</td><td class="num">{{ row.volume_ml }}</td><td class="num">{{ row.long_axis_mm }}</td><td class="num">{{ row.short_axis_mm }}</td></tr>
{% endfor %}</tbody></table>{% else %}<p class="explain">None: every reference lesion was detected.</p>{% endif %}
</div>
<div>
<h3>Largest false-positive predictions</h3>
{% if false_positives %}<table id="false-positive-lesions" class="data"><thead><tr><th>case</th><th>label</th><th>component</th><th>volume (mL)</th><th>long axis (mm)</th><th>short axis (mm)</th></tr></thead><tbody>
{% for row in false_positives %}<tr><td><a href="#{{ anchors.get(row.case, 'cases') }}">{{ row.case }}</a></td><td>{{ row.label }}</td><td class="num">{{ row.lesion }}</td><td class="num">{{ row.volume_ml }}</td><td class="num">{{ row.long_axis_mm }}</td><td class="num">{{ row.short_axis_mm }}</td></tr>
{% endfor %}</tbody></table>{% else %}<p class="explain">None.</p>{% endif %}
</div>
</div>
</section>
{% endif %}

<section id="worst">
<h2>Worst cases</h2>
<p class="explain">From summary.json: the cases with the lowest mean Dice over all evaluated labels (labels absent from both maps count 1), with the mean over the labels present in either map
(the ranking of the overlays below), and per label the cases with the lowest Dice.
Links jump to the case's overlay{% if not_shown %}; cases without a link are beyond the {{ max_cases }} overlays drawn{% endif %}.</p>
<div class="columns">
<div>
<table id="worst-cases" class="data">
<thead><tr><th>rank</th><th>case</th><th>mean Dice<br>(all labels)</th><th>mean Dice<br>(labels present)</th><th>worst label here</th><th>its Dice</th></tr></thead>
<tbody>
{% for row in worst %}<tr><td class="num">{{ loop.index }}</td><td>{% if row.anchor %}<a href="#{{ row.anchor }}">{{ row.case }}</a>{% else %}{{ row.case }}{% endif %}</td><td class="num">{{ row.mean_dice }}</td><td class="num">{{ row.mean_dice_present }}</td><td>{{ row.worst_label }}</td><td class="num">{{ row.worst_dice }}</td></tr>
{% endfor %}</tbody>
</table>
</div>
<div>
<table id="worst-per-label" class="data">
<thead><tr><th>label</th><th>worst case(s): Dice, HD95 (mm)</th></tr></thead>
<tbody>
{% for entry in worst_labels %}<tr><td class="label">{{ entry.label }}</td><td>{% for case in entry.cases %}{% if anchors.get(case.case) %}<a href="#{{ anchors[case.case] }}">{{ case.case }}</a>{% else %}{{ case.case }}{% endif %} ({{ case.dice_text }}, {{ case.hd95_text }}){% if not loop.last %}; {% endif %}{% endfor %}</td></tr>
{% endfor %}</tbody>
</table>
</div>
</div>
</section>

<section id="cases">
<h2>Case overlays</h2>
<p class="explain">{{ overlay_intro }} Each row: axial, coronal and sagittal slices through the largest connected region where prediction and reference disagree (shaded; + marks the slice centre).
{% if regions %}One colour per region ({% for region in regions %}<b style="color: {{ region.color }}">{{ region.name }}</b>{% if not loop.last %}, {% endif %}{% endfor %}):
the prediction is filled (inner regions over outer ones) and the reference outlined in the same colour; the largest disagreement (a voxel where any region differs) is dashed white.
{% else %}<b style="color: {{ reference_color }}">Reference</b> and <b style="color: {{ prediction_color }}">prediction</b> contours are drawn for every evaluated label.{% endif %} {{ radiological }}</p>
{% if uncertainty_note %}<p class="explain">{{ uncertainty_note }}</p>{% endif %}
{% for note in overlay_notes %}<p class="note">{{ note }}</p>{% endfor %}
{% for thumb in thumbnails %}<figure id="{{ thumb.anchor }}">
<div class="case-title">{{ thumb.rank }}. {{ thumb.case }}</div>
{% if thumb.uncertainty_uri %}<div class="views"><img src="{{ thumb.image_uri }}" alt="overlay of case {{ thumb.case }}">
<img src="{{ thumb.uncertainty_uri }}" alt="predictive entropy of case {{ thumb.case }}"></div>
{% else %}<img src="{{ thumb.image_uri }}" alt="overlay of case {{ thumb.case }}">
{% endif %}<figcaption>{{ thumb.caption }}{% if thumb.uncertainty_caption %} {{ thumb.uncertainty_caption }}{% endif %}{% for note in thumb.notes %} <i>{{ note }}.</i>{% endfor %}</figcaption>
</figure>
{% endfor %}
</section>

{% if include_phi and phi_cases %}
<section id="identifiers">
<h2>Identifying information (--include-phi)</h2>
<table id="phi-table" class="data"><thead><tr><th>case</th><th>field</th><th>value</th></tr></thead><tbody>
{% for case, fields in phi_cases %}{% for key, value in fields %}<tr><td>{{ case }}</td><td>{{ key }}</td><td>{{ value }}</td></tr>
{% endfor %}{% endfor %}</tbody></table>
</section>
{% endif %}

<section id="methods">
<h2>Methods and conventions</h2>
<dl class="conventions">
{% for key, value in conventions %}<dt>{{ key }}</dt><dd>{{ value }}</dd>
{% endfor %}</dl>
</section>
<footer>Generated by medseg {{ version }}. {{ privacy }}</footer>
</main>
</body>
</html>
"""
