// The local S3 server under the Tansu broker: s3rver (file-backed) plus the two S3 conditional writes that
// Tansu relies on to keep its watermarks and producer state consistent, which s3rver ignores:
//   If-None-Match: *  -> 412 when the object exists (create-only)
//   If-Match: ETAG    -> 412 when the object is missing or its ETag differs (compare-and-swap)
// Without them a restarted Tansu overwrites the partition's watermark and re-uses offsets from 0.
// It also writes each object whole (a staging file renamed over it) and orders the reads and writes of a key;
// and it lists from an in-memory index (see below).
// Usage: node server.js --directory DIR --address 127.0.0.1 --port PORT --bucket NAME
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const fsp = require('fs/promises');
const path = require('path');
const { Readable } = require('stream');
const { pipeline } = require('stream/promises');
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

// Work on one key, one at a time, in arrival order.
function keyQueue() {
  const tails = new Map();
  return (key, work) => {
    const run = (tails.get(key) || Promise.resolve()).then(work, work);
    const tail = run.catch(() => {});
    tails.set(key, tail);
    tail.then(() => { if (tails.get(key) === tail) tails.delete(key); });
    return run;
  };
}
// Conditional writes on one key are serialized, so check-then-write is atomic.
const serialized = keyQueue();

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

// Listings from an in-memory index. s3rver walks the bucket's folder and reads three files per object listed;
// Tansu lists a partition's objects on every fetch, so the broker slowed down with every batch stored (a day
// of the closed loop took 4 min on day 1 and 11 min on day 3). The index is built from one walk on the first
// listing of a bucket and kept current by the store's own writes (this server is the store's only writer).
const S3Object = require('s3rver/lib/models/object');
const store = server.store;
const indexes = new Map(); // bucket -> {keys: sorted array, metadata: Map key -> metadata}

function firstAtOrAfter(keys, target) {
  let low = 0;
  let high = keys.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (keys[mid] < target) low = mid + 1; else high = mid;
  }
  return low;
}

const walkListing = store.listObjects.bind(store);
async function indexOf(bucket) {
  if (!indexes.has(bucket)) {
    const building = walkListing(bucket, {}).then(({ objects }) => ({
      keys: objects.map((o) => o.key).sort(),
      metadata: new Map(objects.map((o) => [o.key, o.metadata])),
    }));
    indexes.set(bucket, building);
  }
  return indexes.get(bucket);
}

async function remember(bucket, key) {
  const index = await indexOf(bucket);
  const metadata = await store.getMetadata(bucket, key);
  const at = firstAtOrAfter(index.keys, key);
  if (index.keys[at] !== key) index.keys.splice(at, 0, key);
  index.metadata.set(key, metadata);
}

async function forget(bucket, key) {
  const index = await indexOf(bucket);
  const at = firstAtOrAfter(index.keys, key);
  if (index.keys[at] === key) index.keys.splice(at, 1);
  index.metadata.delete(key);
}

// Reads and writes of an object, one at a time per key, and each write whole. s3rver writes an object in place
// (it truncates the file, then writes, and for a Buffer returns before the write has finished), so a read that
// raced a write got an empty or partial object: Tansu then failed to parse a partition's watermark ("EOF while
// parsing a value") and refused a produce, which stopped the simulated clock in a demo run. A write now goes to
// a staging file renamed over the object: a read already streaming keeps the whole old object.
const objectQueue = keyQueue();
let staged = 0;

async function writeWhole(object) {
  const objectPath = store.getResourcePath(object.bucket, object.key, 'object');
  await fsp.mkdir(path.dirname(objectPath), { recursive: true });
  const staging = `${objectPath}.${process.pid}-${++staged}.staging`;
  const md5 = crypto.createHash('md5');
  let size = 0;
  const source = Buffer.isBuffer(object.content) ? Readable.from([object.content]) : object.content;
  async function* counted(chunks) {
    for await (const chunk of chunks) {
      md5.update(chunk);
      size += chunk.length;
      yield chunk;
    }
  }
  try {
    await pipeline(source, counted, fs.createWriteStream(staging));
    await fsp.rename(staging, objectPath);
  } catch (err) {
    await fsp.rm(staging, { force: true });
    throw err;
  }
  const digest = md5.digest('hex');
  await store.putMetadata(object.bucket, object.key, object.metadata, digest);
  return { size, md5: digest };
}

store.putObject = (object) => objectQueue(`${object.bucket}/${object.key}`, async () => {
  const result = await writeWhole(object);
  await remember(object.bucket, object.key);
  return result;
});
const getObject = store.getObject.bind(store);
store.getObject = (bucket, key, options) => objectQueue(`${bucket}/${key}`, () => getObject(bucket, key, options));
const copyObject = store.copyObject.bind(store);
store.copyObject = (srcBucket, srcKey, destBucket, destKey, replacement) =>
  objectQueue(`${destBucket}/${destKey}`, async () => {
    const result = await copyObject(srcBucket, srcKey, destBucket, destKey, replacement);
    await remember(destBucket, destKey);
    return result;
  });
const deleteObject = store.deleteObject.bind(store);
store.deleteObject = (bucket, key) => objectQueue(`${bucket}/${key}`, async () => {
  const result = await deleteObject(bucket, key);
  await forget(bucket, key);
  return result;
});
const deleteBucket = store.deleteBucket.bind(store);
store.deleteBucket = async (bucket) => {
  const result = await deleteBucket(bucket);
  indexes.delete(bucket);
  return result;
};

store.listObjects = async (bucket, { delimiter = '', startAfter = '', prefix = '', maxKeys = Infinity } = {}) => {
  const index = await indexOf(bucket);
  const objects = [];
  const commonPrefixes = new Set();
  let isTruncated = false;
  const from = startAfter >= prefix ? startAfter + '\0' : prefix; // keys > startAfter, >= prefix
  for (let i = firstAtOrAfter(index.keys, from); i < index.keys.length; i++) {
    const key = index.keys[i];
    if (!key.startsWith(prefix)) break;
    if (delimiter) {
      const at = key.slice(prefix.length).indexOf(delimiter);
      if (at !== -1) {
        commonPrefixes.add(key.slice(0, prefix.length + at + 1));
        continue;
      }
    }
    if (objects.length >= maxKeys) {
      isTruncated = true;
      break;
    }
    objects.push(new S3Object(bucket, key, null, index.metadata.get(key)));
  }
  return { objects, commonPrefixes: [...commonPrefixes].sort(), isTruncated };
};

server.run().then(
  ({ address, port }) => console.log(`s3 listening on ${address}:${port}`),
  (err) => { console.error(err); process.exit(1); },
);
process.on('SIGTERM', () => server.close().then(() => process.exit(0)));
