// The local S3 server under the Tansu broker: s3rver (file-backed) plus the two S3 conditional writes that
// Tansu relies on to keep its watermarks and producer state consistent, which s3rver ignores:
//   If-None-Match: *  -> 412 when the object exists (create-only)
//   If-Match: ETAG    -> 412 when the object is missing or its ETag differs (compare-and-swap)
// Without them a restarted Tansu overwrites the partition's watermark and re-uses offsets from 0.
// Usage: node server.js --directory DIR --address 127.0.0.1 --port PORT --bucket NAME
'use strict';
const S3rver = require('s3rver'); // found through NODE_PATH (.tools/node_modules)

function option(name) {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0 || at + 1 >= process.argv.length) {
    console.error(`missing --${name}`);
    process.exit(2);
  }
  return process.argv[at + 1];
}

const server = new S3rver({
  directory: option('directory'),
  address: option('address'),
  port: Number(option('port')),
  silent: true,
  configureBuckets: [{ name: option('bucket') }],
});

// Conditional writes on one key are serialized, so check-then-write is atomic.
const tails = new Map();
function serialized(key, work) {
  const run = (tails.get(key) || Promise.resolve()).then(work, work);
  const tail = run.catch(() => {});
  tails.set(key, tail);
  tail.then(() => { if (tails.get(key) === tail) tails.delete(key); });
  return run;
}

const unquote = (etag) => (etag || '').replace(/^W\//, '').replace(/"/g, '');

function preconditionFailed(ctx) {
  ctx.status = 412;
  ctx.type = 'application/xml';
  ctx.body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code>' +
    '<Message>At least one of the pre-conditions you specified did not hold</Message></Error>';
}

server.middleware.unshift(async (ctx, next) => {
  const ifNoneMatch = ctx.get('if-none-match');
  const ifMatch = ctx.get('if-match');
  if (ctx.method !== 'PUT' || (!ifNoneMatch && !ifMatch)) return next();
  const [bucket, ...rest] = ctx.path.slice(1).split('/').map(decodeURIComponent);
  const key = rest.join('/');
  return serialized(`${bucket}/${key}`, async () => {
    const exists = await server.store.existsObject(bucket, key);
    if (ifNoneMatch === '*' && exists) return preconditionFailed(ctx);
    if (ifMatch) {
      if (!exists) return preconditionFailed(ctx);
      const metadata = await server.store.getMetadata(bucket, key);
      if (unquote(metadata.etag) !== unquote(ifMatch)) return preconditionFailed(ctx);
    }
    return next();
  });
});

server.run().then(
  ({ address, port }) => console.log(`s3 listening on ${address}:${port}`),
  (err) => { console.error(err); process.exit(1); },
);
process.on('SIGTERM', () => server.close().then(() => process.exit(0)));
