// The plotly.js the viewer ships: plotly's core (scatter and the cartesian axes, legend,
// hover, annotations, shapes, colorbar, modebar) and the other trace types that
// rkif_core::report::figures uses: bar and heatmap. Bundled by scripts/build-viewer.sh.
// A figure with another trace type draws nothing: add its module here (tests/tests/viewer.rs
// checks that every type the figures use is registered).
'use strict';

var Plotly = require('plotly.js/lib/core');

Plotly.register([require('plotly.js/lib/bar'), require('plotly.js/lib/heatmap')]);

module.exports = Plotly;
