// Baseline JPEG decoding as `skinfeat predict` decodes (libjpeg-turbo through
// simplejpeg with TensorFlow's settings: the fast integer IDCT, jidctfst.c, and
// fancy upsampling, jdsample.c; YCbCr -> RGB as jdcolor.c), in integer arithmetic
// so the pixels are the same. Browsers decode with the accurate IDCT instead
// (pixels up to 3/255 apart). Handles baseline Huffman JPEGs with 1 or 3
// components sampled 1x1, 2x1 or 2x2; anything else returns null (the caller
// falls back to the browser's decoder).

const ZIGZAG = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13,
  6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46,
  53, 60, 61, 54, 47, 55, 62, 63];
const AANSCALES = [16384, 22725, 21407, 19266, 16384, 12873, 8867, 4520, 22725, 31521, 29692, 26722, 22725, 17855,
  12299, 6270, 21407, 29692, 27969, 25172, 21407, 16819, 11585, 5906, 19266, 26722, 25172, 22654, 19266, 15137, 10426,
  5315, 16384, 22725, 21407, 19266, 16384, 12873, 8867, 4520, 12873, 17855, 16819, 15137, 12873, 10114, 6967, 3552,
  8867, 12299, 11585, 10426, 8867, 6967, 4799, 2446, 4520, 6270, 5906, 5315, 4520, 3552, 2446, 1247];

function huffmanTable(counts, symbols) {
  // maxcode[l], valptr[l], mincode[l] per code length l (1..16), as jdhuff.c's slow path.
  const maxcode = new Int32Array(18).fill(-1), valptr = new Int32Array(17), mincode = new Int32Array(17);
  let code = 0, k = 0;
  for (let l = 1; l <= 16; l++) {
    valptr[l] = k; mincode[l] = code;
    code += counts[l - 1]; k += counts[l - 1];
    if (counts[l - 1]) maxcode[l] = code - 1;
    code <<= 1;
  }
  maxcode[17] = 0x7fffffff;
  return {maxcode, valptr, mincode, symbols};
}

// Range limiting after the IDCT (jdmaster.c's table, indexed with & 1023).
function idctLimit(x) {
  const i = x & 1023;
  return i < 128 ? i + 128 : i < 512 ? 255 : i < 896 ? 0 : i - 896;
}

const M = (v, c) => (v * c) >> 8;  // jidctfst.c MULTIPLY: DESCALE without rounding, CONST_BITS 8

// jidctfst.c: coefficients (natural order) times the scaled quantisation table -> 8x8 samples.
function idctFast(coef, q, out, offset, stride, ws) {
  for (let c = 0; c < 8; c++) {
    if (!coef[8 + c] && !coef[16 + c] && !coef[24 + c] && !coef[32 + c] && !coef[40 + c] && !coef[48 + c] && !coef[56 + c]) {
      const dc = coef[c] * q[c];
      for (let r = 0; r < 8; r++) ws[r * 8 + c] = dc;
      continue;
    }
    const v = (r) => coef[r * 8 + c] * q[r * 8 + c];
    const row = idct1d(v(0), v(1), v(2), v(3), v(4), v(5), v(6), v(7));
    for (let r = 0; r < 8; r++) ws[r * 8 + c] = row[r];
  }
  for (let r = 0; r < 8; r++) {
    const w = r * 8, o = offset + r * stride;
    if (!ws[w + 1] && !ws[w + 2] && !ws[w + 3] && !ws[w + 4] && !ws[w + 5] && !ws[w + 6] && !ws[w + 7]) {
      const dc = idctLimit(ws[w] >> 5);
      for (let c = 0; c < 8; c++) out[o + c] = dc;
      continue;
    }
    const row = idct1d(ws[w], ws[w + 1], ws[w + 2], ws[w + 3], ws[w + 4], ws[w + 5], ws[w + 6], ws[w + 7]);
    for (let c = 0; c < 8; c++) out[o + c] = idctLimit(row[c] >> 5);
  }
}

function idct1d(x0, x1, x2, x3, x4, x5, x6, x7) {
  const t10 = x0 + x4, t11 = x0 - x4, t13 = x2 + x6, t12 = M(x2 - x6, 362) - t13;
  const e0 = t10 + t13, e3 = t10 - t13, e1 = t11 + t12, e2 = t11 - t12;
  const z13 = x5 + x3, z10 = x5 - x3, z11 = x1 + x7, z12 = x1 - x7;
  const o7 = z11 + z13, o11 = M(z11 - z13, 362), z5 = M(z10 + z12, 473);
  const o10 = M(z12, 277) - z5, o12 = M(z10, -669) + z5;
  const o6 = o12 - o7, o5 = o11 - o6, o4 = o10 + o5;
  return [e0 + o7, e1 + o6, e2 + o5, e3 - o4, e3 + o4, e2 - o5, e1 - o6, e0 - o7];
}

// Fancy upsampling of a component plane (w x h) by 2 across, and by 2 down when v2.
function upsample(plane, w, h, v2) {
  const out = new Uint8Array(w * 2 * h * (v2 ? 2 : 1));
  const W = w * 2;
  if (!v2) {
    for (let y = 0; y < h; y++) {
      const p = y * w, o = y * W;
      for (let c = 0; c < w; c++) {
        const x = plane[p + c] * 3, l = plane[p + Math.max(c - 1, 0)], r = plane[p + Math.min(c + 1, w - 1)];
        out[o + 2 * c] = (x + l + 1) >> 2;
        out[o + 2 * c + 1] = (x + r + 2) >> 2;
      }
    }
    return out;
  }
  const sums = new Int32Array(w);
  for (let y = 0; y < h; y++) {
    for (let v = 0; v < 2; v++) {
      const near = y * w, far = Math.min(Math.max(y + (v ? 1 : -1), 0), h - 1) * w, o = (2 * y + v) * W;
      for (let c = 0; c < w; c++) sums[c] = plane[near + c] * 3 + plane[far + c];
      for (let c = 0; c < w; c++) {
        const s = sums[c] * 3, l = sums[Math.max(c - 1, 0)], r = sums[Math.min(c + 1, w - 1)];
        out[o + 2 * c] = (s + l + 8) >> 4;
        out[o + 2 * c + 1] = (s + r + 7) >> 4;
      }
    }
  }
  return out;
}

const FIX = (x) => Math.floor(x * 65536 + 0.5);
const clamp = (x) => (x < 0 ? 0 : x > 255 ? 255 : x);

// bytes (Uint8Array) -> {h, w, rgb: Uint8Array h*w*3}, or null for what this decoder does not handle.
export function decodeJpeg(bytes) {
  if (bytes[0] !== 0xff || bytes[1] !== 0xd8) return null;
  const qt = [], dc = [], ac = [];
  let frame = null, restart = 0, pos = 2;
  while (pos + 4 <= bytes.length) {
    if (bytes[pos] !== 0xff) return null;
    const marker = bytes[pos + 1];
    if (marker === 0xff) { pos++; continue; }
    const len = (bytes[pos + 2] << 8) | bytes[pos + 3], seg = pos + 4, end = pos + 2 + len;
    if (marker === 0xdb) {  // DQT
      for (let p = seg; p < end;) {
        const precision = bytes[p] >> 4, id = bytes[p] & 15, q = new Int32Array(64);
        if (precision) return null;
        for (let i = 0; i < 64; i++) {
          const n = ZIGZAG[i];
          q[n] = (bytes[p + 1 + i] * AANSCALES[n] + (1 << 11)) >> 12;  // jddctmgr.c: ifast multipliers
        }
        qt[id] = q; p += 65;
      }
    } else if (marker === 0xc4) {  // DHT
      for (let p = seg; p < end;) {
        const cls = bytes[p] >> 4, id = bytes[p] & 15, counts = bytes.subarray(p + 1, p + 17);
        const total = counts.reduce((a, b) => a + b, 0);
        (cls ? ac : dc)[id] = huffmanTable(counts, bytes.slice(p + 17, p + 17 + total));
        p += 17 + total;
      }
    } else if (marker === 0xc0 || marker === 0xc1) {  // SOF0/1: baseline, Huffman
      if (bytes[seg] !== 8) return null;
      const h = (bytes[seg + 1] << 8) | bytes[seg + 2], w = (bytes[seg + 3] << 8) | bytes[seg + 4], n = bytes[seg + 5];
      const comps = [];
      for (let i = 0; i < n; i++) {
        const b = seg + 6 + i * 3;
        comps.push({id: bytes[b], h: bytes[b + 1] >> 4, v: bytes[b + 1] & 15, tq: bytes[b + 2]});
      }
      frame = {h, w, comps};
    } else if (marker === 0xdd) {
      restart = (bytes[seg] << 8) | bytes[seg + 1];
    } else if (marker === 0xda) {  // SOS: the one scan
      if (!frame) return null;
      const ns = bytes[seg];
      if (ns !== frame.comps.length) return null;
      for (let i = 0; i < ns; i++) {
        const comp = frame.comps.find((c) => c.id === bytes[seg + 1 + i * 2]);
        if (!comp) return null;
        comp.td = bytes[seg + 2 + i * 2] >> 4; comp.ta = bytes[seg + 2 + i * 2] & 15;
      }
      return scan(bytes, end, frame, qt, dc, ac, restart);
    } else if ((marker >= 0xc2 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) || marker === 0xd9) {
      return null;  // progressive, lossless, arithmetic coding, or no image
    }
    pos = end;
  }
  return null;
}

function scan(bytes, start, frame, qt, dcTables, acTables, restart) {
  const {comps} = frame, hmax = Math.max(...comps.map((c) => c.h)), vmax = Math.max(...comps.map((c) => c.v));
  const shape = comps.map((c) => `${c.h}x${c.v}`).join(",");
  if (!(comps.length === 1 || (comps.length === 3 && ["1x1,1x1,1x1", "2x1,1x1,1x1", "2x2,1x1,1x1"].includes(shape)))) return null;
  if (comps.some((c) => !qt[c.tq] || !dcTables[c.td] || !acTables[c.ta])) return null;
  const single = comps.length === 1;
  const mcusX = single ? Math.ceil(frame.w / 8) : Math.ceil(frame.w / (8 * hmax));
  const mcusY = single ? Math.ceil(frame.h / 8) : Math.ceil(frame.h / (8 * vmax));
  for (const c of comps) {
    const h = single ? 1 : c.h, v = single ? 1 : c.v;
    c.stride = mcusX * h * 8; c.rows = mcusY * v * 8; c.data = new Uint8Array(c.stride * c.rows); c.pred = 0;
    c.width = Math.ceil(frame.w * c.h / hmax); c.height = Math.ceil(frame.h * c.v / vmax); c.bh = h; c.bv = v;
  }
  let pos = start, bits = 0, nbits = 0;
  const bit = () => {
    if (nbits === 0) {
      if (pos >= bytes.length) throw new Error("truncated JPEG data");
      let b = bytes[pos++];
      if (b === 0xff) {
        const next = bytes[pos];
        if (next === 0) pos++;
        else if (next >= 0xd0 && next <= 0xd7) throw new Error("unexpected restart marker");
        else b = 0;  // a marker: libjpeg feeds zeros
        if (next !== 0) pos--;
      }
      bits = b; nbits = 8;
    }
    nbits--;
    return (bits >> nbits) & 1;
  };
  const receive = (s) => { let v = 0; for (let i = 0; i < s; i++) v = (v << 1) | bit(); return v; };
  const extend = (v, s) => (s && v < (1 << (s - 1)) ? v - (1 << s) + 1 : v);
  const decodeSymbol = (t) => {
    let code = bit(), l = 1;
    while (code > t.maxcode[l]) { code = (code << 1) | bit(); if (++l > 16) throw new Error("bad Huffman code"); }
    return t.symbols[t.valptr[l] + code - t.mincode[l]];
  };
  const coef = new Int32Array(64), ws = new Int32Array(64);
  const block = (c, bx, by) => {
    coef.fill(0);
    const s = decodeSymbol(dcTables[c.td]);
    c.pred += s ? extend(receive(s), s) : 0;
    coef[0] = c.pred;
    for (let k = 1; k < 64;) {
      const rs = decodeSymbol(acTables[c.ta]), r = rs >> 4, size = rs & 15;
      if (!size) { if (r !== 15) break; k += 16; continue; }
      k += r;
      if (k > 63) break;
      coef[ZIGZAG[k++]] = extend(receive(size), size);
    }
    idctFast(coef, qt[c.tq], c.data, by * 8 * c.stride + bx * 8, c.stride, ws);
  };
  const total = mcusX * mcusY;
  for (let m = 0; m < total; m++) {
    if (restart && m && m % restart === 0) {  // byte-align, skip the RSTn marker, reset predictions
      nbits = 0;
      while (pos + 1 < bytes.length && !(bytes[pos] === 0xff && bytes[pos + 1] >= 0xd0 && bytes[pos + 1] <= 0xd7)) pos++;
      pos += 2;
      for (const c of comps) c.pred = 0;
    }
    const mx = m % mcusX, my = Math.floor(m / mcusX);
    for (const c of comps) {
      for (let v = 0; v < c.bv; v++) for (let h = 0; h < c.bh; h++) block(c, mx * c.bh + h, my * c.bv + v);
    }
  }
  return toRgb(frame, comps, hmax, vmax);
}

function plane(c) {  // the component's samples, cropped to its own width x height
  const out = new Uint8Array(c.width * c.height);
  for (let y = 0; y < c.height; y++) out.set(c.data.subarray(y * c.stride, y * c.stride + c.width), y * c.width);
  return out;
}

function toRgb(frame, comps, hmax, vmax) {
  const {w, h} = frame, rgb = new Uint8Array(w * h * 3);
  if (comps.length === 1) {
    const y = plane(comps[0]);
    for (let i = 0; i < w * h; i++) rgb[i * 3] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = y[i];
    return {h, w, rgb};
  }
  const full = comps.map((c) => {
    const p = plane(c);
    if (c.h === hmax && c.v === vmax) return {p, w: c.width};
    return {p: upsample(p, c.width, c.height, vmax === 2), w: c.width * 2};
  });
  const crR = FIX(1.402), cbB = FIX(1.772), crG = FIX(0.71414), cbG = FIX(0.34414);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const Y = full[0].p[y * full[0].w + x], cb = full[1].p[y * full[1].w + x] - 128, cr = full[2].p[y * full[2].w + x] - 128;
      const o = (y * w + x) * 3;
      rgb[o] = clamp(Y + ((crR * cr + 32768) >> 16));
      rgb[o + 1] = clamp(Y + ((-cbG * cb + 32768 - crG * cr) >> 16));
      rgb[o + 2] = clamp(Y + ((cbB * cb + 32768) >> 16));
    }
  }
  return {h, w, rgb};
}
