// The client's size as shipped: minified (esbuild, a dev dependency) and gzipped (level 9).
// Usage: node scripts/size.mjs [--max-min-bytes N]   (exits 1 when the minified size is over N)
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { transformSync } from 'esbuild';

const src = readFileSync(fileURLToPath(new URL('../ringcast.js', import.meta.url)), 'utf8');
const min = transformSync(src, { minify: true, format: 'esm', target: 'es2022' }).code;
const gz = gzipSync(min, { level: 9 }).length;
const max = Number(process.argv[process.argv.indexOf('--max-min-bytes') + 1]) || 8192;
console.log(`ringcast.js: ${src.length} B source, ${min.length} B minified, ${gz} B minified+gzip (limit ${max} B minified)`);
process.exit(min.length > max ? 1 : 0);
