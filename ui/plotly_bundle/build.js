// Builds static/plotly-<version>-toydiff.min.js: `npm ci && npm run build` in this folder.
// The settings are plotly.js's own (its esbuild-config.js), minified; the bundle is committed,
// so the app needs neither node nor npm. Rebuild when requirements.txt changes plotly: the
// version must be that of the plotly package's bundle (tests/test_plots.py checks it).
const path = require('path');
const esbuild = require('esbuild');
const { environmentPlugin } = require('esbuild-plugin-environment');
const { glsl } = require('esbuild-plugin-glsl');
const InlineCSSPlugin = require('esbuild-plugin-inline-css');
const { version } = require('plotly.js/package.json');

esbuild
  .build({
    entryPoints: [path.join(__dirname, 'entry.js')],
    outfile: path.join(__dirname, '..', '..', 'static', `plotly-${version}-toydiff.min.js`),
    format: 'iife',
    globalName: 'Plotly',
    bundle: true,
    minify: true,
    legalComments: 'eof',
    banner: { js: `/* plotly.js v${version} (MIT License, Copyright Plotly, Inc.): core, scattergl, heatmap; built by ui/plotly_bundle/build.js */` },
    plugins: [InlineCSSPlugin(), glsl({ minify: true }), environmentPlugin({ NODE_DEBUG: false })],
    alias: { regl: '@plotly/regl', stream: 'stream-browserify' },
    define: { global: 'window', 'define.amd': 'false' },
    target: 'es2016',
    logLevel: 'info',
  })
  .catch(() => process.exit(1));
