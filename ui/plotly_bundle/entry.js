// plotly.js core (scatter included) and the other trace types of toydiff's figures.
// tests/test_plots.py checks that every figure the app draws uses only these.
var Plotly = require('plotly.js/lib/core');

Plotly.register([require('plotly.js/lib/scattergl'), require('plotly.js/lib/heatmap')]);

module.exports = Plotly;
