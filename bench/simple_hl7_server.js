// The benchmark's Node peer: simple-hl7's MLLP server (npm), answering every message with the
// ACK simple-hl7 builds itself (MSA-1 AA, MSA-2 the message's MSH-10). It parses each message
// and stores nothing. bench_listener.py installs simple-hl7 and sets NODE_PATH.
// Usage: node simple_hl7_server.js PORT
"use strict";

const net = require("net");
const hl7 = require("simple-hl7");

// simple-hl7 listens on every interface; the benchmark stays on loopback.
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (port, ...rest) {
  return listen.call(this, port, "127.0.0.1", ...rest);
};

const app = hl7.tcp();
app.use((req, res) => res.end());
app.use((err) => process.stderr.write(`simple-hl7: ${err.message}\n`));
app.start(Number(process.argv[2]));
