// One Node client, no dependencies: batch reads of 100 ids straight from Redis (as
// docs/store.md tells a reader in another language) or through POST /v1/codes:batchGet.
//
//   node bench/reads.mjs redis HOST PORT PREFIX VERSION IDS_FILE CONCURRENCY SECONDS [RATE]
//   node bench/reads.mjs http  URL TOKEN IDS_FILE CONCURRENCY SECONDS [RATE]
//
// IDS_FILE: one id per line. Each call reads 100 ids drawn at random. Without RATE, CONCURRENCY
// calls are kept in flight for SECONDS (throughput); with RATE, calls start RATE times a second
// (open loop, up to CONCURRENCY in flight; a call that finds none free is counted as dropped)
// and the latency percentiles are the point. Prints one JSON line.
import { readFileSync } from "node:fs";
import net from "node:net";
import http from "node:http";
import zlib from "node:zlib";

const BATCH = 100;
const [mode, ...rest] = process.argv.slice(2);

function crc32(text) {
  return zlib.crc32(Buffer.from(text, "utf8")) >>> 0;
}

function command(args) {
  let out = `*${args.length}\r\n`;
  for (const a of args) out += `$${Buffer.byteLength(a)}\r\n${a}\r\n`;
  return out;
}

// A RESP connection that pipelines: each request is a run of commands answered in order.
class Resp {
  constructor(host, port) {
    this.sock = net.connect({ host, port });
    this.sock.setNoDelay(true);
    this.buf = Buffer.alloc(0);
    this.waiting = [];
    this.sock.on("data", (d) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      this.drain();
    });
  }
  send(cmds) {
    return new Promise((resolve) => {
      this.waiting.push({ n: cmds.length, got: [], resolve });
      this.sock.write(cmds.map(command).join(""));
    });
  }
  drain() {
    while (this.waiting.length) {
      const head = this.waiting[0];
      const parsed = parse(this.buf, 0);
      if (!parsed) return;
      this.buf = this.buf.subarray(parsed.end);
      head.got.push(parsed.value);
      if (head.got.length === head.n) {
        this.waiting.shift();
        head.resolve(head.got);
      }
    }
  }
}

function parse(buf, at) {
  const nl = buf.indexOf("\r\n", at);
  if (nl < 0) return null;
  const type = String.fromCharCode(buf[at]);
  const line = buf.toString("latin1", at + 1, nl);
  if (type === "$") {
    const len = Number(line);
    if (len < 0) return { value: null, end: nl + 2 };
    if (buf.length < nl + 2 + len + 2) return null;
    return { value: buf.subarray(nl + 2, nl + 2 + len), end: nl + 2 + len + 2 };
  }
  if (type === "*") {
    let end = nl + 2;
    const items = [];
    for (let i = 0; i < Number(line); i++) {
      const p = parse(buf, end);
      if (!p) return null;
      items.push(p.value);
      end = p.end;
    }
    return { value: items, end };
  }
  if (type === "-") throw new Error(line);
  return { value: line, end: nl + 2 };
}

// docs/store.md, "Item value (format 1)"
function decode(value) {
  const l = value.readUInt8(1);
  const k = value.readUInt16LE(2);
  const suffix = value.readUInt32LE(4);
  const rq = [];
  for (let i = 0; i < l; i++) rq.push(value.readUInt16LE(8 + 2 * i));
  const vq = [];
  for (let i = 0; i < k; i++) vq.push(value.readUInt32LE(8 + 2 * l + 4 * i));
  return { rq, vq, suffix };
}

function sample(ids) {
  const out = [];
  for (let i = 0; i < BATCH; i++) out.push(ids[Math.floor(Math.random() * ids.length)]);
  return out;
}

async function drive(call, concurrency, seconds, rate) {
  const lat = [];
  let calls = 0;
  let dropped = 0;
  const start = performance.now();
  const stopAt = start + seconds * 1000;
  if (!rate) {
    await Promise.all(
      Array.from({ length: concurrency }, async (_, w) => {
        while (performance.now() < stopAt) {
          const t = performance.now();
          await call(w);
          lat.push(performance.now() - t);
          calls++;
        }
      }),
    );
  } else {
    const free = Array.from({ length: concurrency }, (_, w) => w);
    const running = new Set();
    let next = start;
    while (performance.now() < stopAt) {
      const now = performance.now();
      while (next <= now) {
        next += 1000 / rate;
        const w = free.pop();
        if (w === undefined) {
          dropped++;
          continue;
        }
        const t = performance.now();
        const p = call(w).then(() => {
          lat.push(performance.now() - t);
          calls++;
          free.push(w);
          running.delete(p);
        });
        running.add(p);
      }
      await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
    }
    await Promise.all(running);
  }
  const seconds_ = (performance.now() - start) / 1000;
  lat.sort((a, b) => a - b);
  const pct = (q) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))];
  return {
    calls,
    dropped,
    seconds: seconds_,
    calls_per_s: calls / seconds_,
    ids_per_s: (calls * BATCH) / seconds_,
    p50_ms: pct(0.5),
    p99_ms: pct(0.99),
  };
}

async function redisMode([host, port, prefix, version, idsFile, concurrency, seconds, rate]) {
  const ids = readFileSync(idsFile, "utf8").split("\n").filter(Boolean);
  const conns = Array.from({ length: Number(concurrency) }, () => new Resp(host, Number(port)));
  const call = async (w) => {
    const batch = sample(ids);
    const cmds = batch.map((id) => ["HGET", `${prefix}:${version}:i:${crc32(id) % 65536}`, id]);
    const values = await conns[w].send(cmds);
    for (const v of values) if (v === null || decode(v).rq.length === 0) throw new Error("miss");
  };
  const out = await drive(call, Number(concurrency), Number(seconds), Number(rate || 0));
  for (const c of conns) c.sock.end();
  return out;
}

async function httpMode([url, token, idsFile, concurrency, seconds, rate]) {
  const ids = readFileSync(idsFile, "utf8").split("\n").filter(Boolean);
  const agent = new http.Agent({ keepAlive: true, maxSockets: Number(concurrency) });
  const target = new URL("/v1/codes:batchGet", url);
  const call = () =>
    new Promise((resolve, reject) => {
      const body = JSON.stringify({ ids: sample(ids) });
      const req = http.request(
        target,
        {
          method: "POST",
          agent,
          headers: {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
            authorization: `Bearer ${token}`,
          },
        },
        (res) => {
          const chunks = [];
          res.on("data", (c) => chunks.push(c));
          res.on("end", () => {
            if (res.statusCode !== 200) return reject(new Error(`status ${res.statusCode}`));
            const items = JSON.parse(Buffer.concat(chunks)).items;
            if (items.some((i) => i === null)) return reject(new Error("miss"));
            resolve();
          });
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  const out = await drive(call, Number(concurrency), Number(seconds), Number(rate || 0));
  agent.destroy();
  return out;
}

const out = mode === "redis" ? await redisMode(rest) : await httpMode(rest);
console.log(JSON.stringify({ mode, ...out }));
