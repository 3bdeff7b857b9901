#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// The JavaScript baseline for `dstack-bench verify`: verifies one quote in-process with the
// pure-JS @phala/dcap-qvl (its exported verify(rawQuote, collateral, nowSecs)) in a loop for
// --seconds and prints one JSON line in the same shape as dstack-bench:
// {"mode":"dcap-qvl-js","ops_per_sec","p50_us","p99_us","count"}. Any failed verification stops
// the loop with exit 1. Used by scripts/bench-verify.sh.
//
// usage: node bench/dcapqvl_loop.cjs --quote FILE --collateral FILE --time UNIX [--seconds N]
'use strict';

const fs = require('fs');
const { verify } = require('@phala/dcap-qvl');

function usage(msg) {
    if (msg) {
        console.error(`dcapqvl_loop: ${msg}`);
    }
    console.error('usage: node bench/dcapqvl_loop.cjs --quote FILE --collateral FILE --time UNIX [--seconds N]');
    process.exit(2);
}

function parseArgs(argv) {
    const opts = { seconds: 3 };
    for (let i = 0; i < argv.length; i++) {
        const key = argv[i];
        const val = argv[i + 1];
        if (!['--quote', '--collateral', '--time', '--seconds'].includes(key)) {
            usage(`unknown argument '${key}'`);
        }
        if (val === undefined) {
            usage(`${key}: expected a value`);
        }
        i++;
        opts[key.slice(2)] = val;
    }
    if (!opts.quote || !opts.collateral || opts.time === undefined) {
        usage('--quote, --collateral and --time are required');
    }
    if (!/^[0-9]+$/.test(opts.time)) {
        usage(`--time: expected unix seconds, got '${opts.time}'`);
    }
    opts.time = parseInt(opts.time, 10);
    opts.seconds = Number(opts.seconds);
    if (!(opts.seconds > 0) || opts.seconds > 3600) {
        usage('--seconds: expected a number in (0, 3600]');
    }
    return opts;
}

function percentileUs(sortedNs, pct) {
    if (sortedNs.length === 0) {
        return 0;
    }
    let rank = Math.ceil((pct / 100) * sortedNs.length);
    rank = Math.min(Math.max(rank, 1), sortedNs.length);
    return Number(sortedNs[rank - 1]) / 1000;
}

function main() {
    const opts = parseArgs(process.argv.slice(2));
    let quote;
    let collateral;
    try {
        quote = new Uint8Array(fs.readFileSync(opts.quote));
        collateral = JSON.parse(fs.readFileSync(opts.collateral, 'utf8'));
    } catch (e) {
        console.error(`dcapqvl_loop: cannot load inputs: ${e.message}`);
        process.exit(2);
    }
    const once = () => {
        try {
            return verify(quote, collateral, opts.time);
        } catch (e) {
            console.error(`dcapqvl_loop: verification failed: ${e.message}`);
            process.exit(1);
        }
    };
    once(); // warm-up (JIT) and input check, not timed
    const samples = [];
    const budget = BigInt(Math.round(opts.seconds * 1e9));
    const start = process.hrtime.bigint();
    let elapsed = 0n;
    do {
        const t0 = process.hrtime.bigint();
        once();
        const t1 = process.hrtime.bigint();
        samples.push(t1 - t0);
        elapsed = t1 - start;
    } while (elapsed < budget);
    samples.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const ops = samples.length / (Number(elapsed) / 1e9);
    const out = {
        mode: 'dcap-qvl-js',
        ops_per_sec: Math.round(ops * 10) / 10,
        p50_us: Math.round(percentileUs(samples, 50) * 100) / 100,
        p99_us: Math.round(percentileUs(samples, 99) * 100) / 100,
        count: samples.length,
    };
    console.log(JSON.stringify(out));
}

main();
