// The one logger of tandem: pino, one JSON object per line on stderr, with `level`,
// `time`, `msg`, `pid` and the fields of each event; in a worker process every line
// also carries `worker`. Workers write their own lines to the stderr they share with
// the control plane (a line is one write, shorter than a pipe's atomic size).
//
// `log.format`: `json`, `pretty` (pino-pretty: one coloured line per event for a person
// at a terminal), or `auto` (the default): pretty when stderr is a terminal, else JSON.
// `log.level` and the format change at a reload; `--log-level` (or TANDEM_LOG_LEVEL)
// overrides the level, in the worker processes too, which inherit the variable.
//
// Operators' lines only: nothing here is called per request (the access log is
// src/dataplane/telemetry.ts). Long-lived loggers are children of `log` made without a
// level of their own, so that they follow the root's level when a reload changes it.

import cluster from 'node:cluster';
import { createRequire } from 'node:module';
import pino from 'pino';

export type Logger = pino.Logger;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface LogConfig {
  readonly level: LogLevel;
  readonly format: LogFormat;
}

export const DEFAULT_LOG: LogConfig = Object.freeze({ level: 'info', format: 'auto' });

interface Target {
  write(line: string): unknown;
}

/** Where lines go now; swapped when the format changes. pino sees one stream for ever. */
const sink: { target: Target; format: 'json' | 'pretty' | null; write(line: string): void } = {
  target: { write: () => {} },
  format: null,
  write(line: string) {
    this.target.write(line);
  },
};

const require = createRequire(import.meta.url);

function open(format: 'json' | 'pretty'): Target {
  // Synchronous: lines are few, and the last ones before an exit must not be lost.
  if (format === 'json') return pino.destination({ dest: 2, sync: true });
  // Loaded only when asked for: a worker writing JSON never pays for it.
  const pretty = require('pino-pretty') as typeof import('pino-pretty');
  return pretty({
    destination: 2,
    sync: true,
    colorize: process.stderr.isTTY === true && process.env.NO_COLOR === undefined,
    singleLine: true,
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
    ignore: 'pid,hostname',
    messageFormat: '{if worker}worker {worker}: {end}{msg}',
  });
}

function resolveFormat(format: LogFormat): 'json' | 'pretty' {
  if (format !== 'auto') return format;
  return process.stderr.isTTY === true ? 'pretty' : 'json';
}

/** The options every tandem logger is made with; `base` adds `worker` in a worker process. */
export function loggerOptions(level: LogLevel = 'info'): pino.LoggerOptions {
  const worker = cluster.isWorker ? cluster.worker?.id : undefined;
  return {
    level,
    base: worker === undefined ? { pid: process.pid } : { pid: process.pid, worker },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
}

/** The root logger of this process. */
export const log: Logger = pino(loggerOptions(), sink);

/** `--log-level`, as the environment hands it to worker processes; it wins over `log.level`. */
const LEVEL_VARIABLE = 'TANDEM_LOG_LEVEL';

/** Applies `log.level` (unless overridden) and `log.format`, at start and on every reload. */
export function configureLogging(config: Partial<LogConfig>): void {
  const override = process.env[LEVEL_VARIABLE];
  const level = override !== undefined && isLogLevel(override) ? override : config.level;
  if (level !== undefined && log.level !== level) log.level = level;
  const format = resolveFormat(config.format ?? sink.format ?? 'auto');
  if (format !== sink.format) {
    sink.target = open(format);
    sink.format = format;
  }
}

/** Sets the level whatever `log.level` says, here and in worker processes started from now on. */
export function overrideLogLevel(level: LogLevel): void {
  process.env[LEVEL_VARIABLE] = level;
  configureLogging({});
}

/** True for a level name `--log-level` and `log.level` accept. */
export function isLogLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

/** A logger that writes nothing (for code run without an operator to read it, e.g. unit tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** An override that names no level is ignored, and said so once. */
function checkOverride(): void {
  const override = process.env[LEVEL_VARIABLE];
  if (override === undefined || isLogLevel(override)) return;
  log.warn({ [LEVEL_VARIABLE]: override }, `${LEVEL_VARIABLE}=${override} is not one of ${LOG_LEVELS.join(', ')}: ignored, log.level applies`);
}

configureLogging(DEFAULT_LOG);
checkOverride();
