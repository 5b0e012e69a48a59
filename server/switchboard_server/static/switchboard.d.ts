// Types for Switchboard's browser module, /switchboard.js (served beside it as /switchboard.d.ts,
// and written with it by `switchboard client-js DIR`).

/** A job's status; the last three are terminal. */
export type JobStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";

/** A job's full state. Every event is one of these, numbered by `seq` from 1 with no gap. */
export interface Job {
  id: string;
  status: JobStatus;
  /** 0 to 100, or null when the job never said. */
  progress: number | null;
  message: string | null;
  data: Record<string, unknown>;
  seq: number;
  /** RFC 3339 UTC, e.g. "2024-05-01T12:00:00.000Z". */
  created_at: string;
  updated_at: string;
  /** Someone asked the worker to stop; its final update will say "cancelled". */
  cancel_requested?: { by: string; at: string } | null;
  /** E.g. "user:42", "batch:7": watchTag follows every job with one. */
  tags?: string[];
  /** The job this one is a child of (a batch). */
  parent?: string | null;
}

/** A parent's children: counted by status, their mean progress. */
export interface ChildrenSummary {
  job_id: string;
  total: number;
  by_status: Partial<Record<JobStatus, number>>;
  progress: number | null;
  updated_at: string;
}

/** One event of a job: its state right after that update. */
export interface JobEvent extends Job {
  /** Only when the update took tags away: those tags (their followers get this event too). */
  tags_removed?: string[];
}

/** The statuses after which a job never changes again. */
export declare const TERMINAL: ReadonlySet<JobStatus>;

/** The codes a refused call carries; others may come from newer servers. */
export type ErrorCode =
  | "unauthorized"
  | "forbidden"
  | "invalid_payload"
  | "not_found"
  | "rate_limited"
  | "payload_too_large"
  | "unavailable"
  | "job_finished"
  | "internal"
  | (string & {});

/** What a refused call rejects with (and what `onError` gets): an Error with the server's code. */
export interface SwitchboardError extends Error {
  code: ErrorCode;
}

export interface ConfigureOptions {
  /** The server, e.g. "https://events.example.com"; defaults to the origin that served the module. */
  url?: string;
  /** A client JWT, when the server has a client secret. */
  token?: string;
  /** Display name in chat rooms. */
  name?: string;
  /** Default: polling, upgraded to websocket. */
  transports?: Array<"polling" | "websocket" | "webtransport">;
  /**
   * Called when the server says the token expires soon (`token:expiring`, a minute before):
   * returns a new token for the same `sub`, sent as `refresh` on every namespace. Without it
   * the server disconnects the sockets when the token expires.
   */
  refreshToken?: () => string | Promise<string>;
}

/** Set the server URL, client token, display name, transports or token refresh. Call before anything else. */
export declare function configure(options?: ConfigureOptions): void;

export type Namespace = "/job" | "/info";

/**
 * The app-wide socket.io-client Socket of a namespace, opened on first use. Only the common
 * part of its API is typed here; see socket.io-client's documentation for the rest.
 */
export interface Socket {
  readonly id: string | undefined;
  readonly connected: boolean;
  readonly active: boolean;
  /** The Manager: `socket.io.engine.transport.name` is "polling" or "websocket". */
  readonly io: {
    readonly engine: { readonly transport: { readonly name: string } };
    on(event: string, listener: (...args: any[]) => void): unknown;
    off(event?: string, listener?: (...args: any[]) => void): unknown;
  };
  on(event: string, listener: (...args: any[]) => void): this;
  once(event: string, listener: (...args: any[]) => void): this;
  off(event?: string, listener?: (...args: any[]) => void): this;
  emit(event: string, ...args: unknown[]): this;
  emitWithAck(event: string, ...args: unknown[]): Promise<any>;
  timeout(milliseconds: number): this;
  connect(): this;
  disconnect(): this;
}

export declare function socket(namespace: Namespace): Socket;

export interface WatchJobOptions {
  /** Replay from after this seq; 0 replays the kept history. Default: the current state on. */
  since?: number | null;
  /** Called when the server refuses the subscription (e.g. "forbidden" by the token). */
  onError?: (error: SwitchboardError) => void;
}

/**
 * Call onEvent(job) for every event of a job, in seq order, exactly once, from its current
 * state on. Resumes by seq after a reconnect. Returns a function that stops watching.
 */
export declare function watchJob(
  jobId: string,
  onEvent: (job: JobEvent) => void,
  options?: WatchJobOptions,
): () => void;

/** One log line of a job. Lines are numbered by `offset` from 1 with no gap. */
export interface LogLine {
  offset: number;
  /** A short name such as "stdout" or "stderr". */
  stream: string;
  /** The line as written: show it as text (textContent), never as HTML. */
  text: string;
  /** When it was stored, RFC 3339 UTC. */
  ts: string;
}

export interface WatchLogsOptions {
  /** Take lines after this offset; 0 (the default) starts at the first kept line; null: from now on. */
  since?: number | null;
  /** Called when the server refuses the subscription (e.g. "forbidden" by the token). */
  onError?: (error: SwitchboardError) => void;
}

/**
 * Call onLines(lines) with a job's log lines, in offset order, each exactly once. Resumes by
 * offset after a reconnect; shares the /job socket with watchJob. Returns a function that stops.
 */
export declare function watchLogs(
  jobId: string,
  onLines: (lines: LogLine[]) => void,
  options?: WatchLogsOptions,
): () => void;

/** The recent jobs at each (re)connect, then every newer state. Returns a function that stops. */
export declare function watchAllJobs(
  onJob: (job: Job) => void,
  options?: { onError?: (error: SwitchboardError) => void },
): () => void;

/**
 * Every job with a tag (e.g. "user:42", granted by the token's `tags`): the newest at each
 * (re)connect, then every newer state of each, in seq order. When an update takes the tag
 * away, `onLeave` gets that event (without the tag) once. Returns a function that stops.
 */
export declare function watchTag(
  tag: string,
  onJob: (job: Job) => void,
  options?: {
    onError?: (error: SwitchboardError) => void;
    onLeave?: (job: JobEvent) => void;
  },
): () => void;

/** A parent's children summary as its children change (watch the parent with watchJob). */
export declare function watchChildren(
  parentId: string,
  onSummary: (summary: ChildrenSummary) => void,
): () => void;

/** Ask a job's worker to stop; resolves to the job with `cancel_requested` set. */
export declare function cancelJob(jobId: string): Promise<Job>;

/** Who this app's connection is, and its grants (glob lists). */
export interface WhoAmI {
  sub: string | null;
  name: string | null;
  jobs: string[];
  rooms: string[];
  cancel: string[];
  tags: string[];
}

export declare function whoami(): Promise<WhoAmI>;

/** Whether a grant list (globs with * and ?) covers a job id or room name. */
export declare function granted(patterns: string[], name: string): boolean;

export interface Member {
  id: string;
  name: string | null;
}

export interface ChatMessage {
  id: string;
  room: string;
  text: string;
  sender: Member;
  ts: string;
}

/** Someone joined or left a room: exactly one of `joined` and `left` is set. */
export interface Presence {
  room: string;
  joined?: Member;
  left?: Member;
}

export interface Room {
  /** The room's recent messages, oldest first. */
  history: ChatMessage[];
  members: Member[];
  /** Send a message; resolves to it as stored. */
  send(text: string): Promise<ChatMessage>;
  leave(): Promise<void>;
}

export interface JoinRoomOptions {
  /** Others' messages in this room. */
  onMessage?: (message: ChatMessage) => void;
  onPresence?: (presence: Presence) => void;
}

/** Join a chat room; rejoins after a reconnect. Rejects with a SwitchboardError when refused. */
export declare function joinRoom(room: string, options?: JoinRoomOptions): Promise<Room>;

export interface Announcement {
  id: string;
  level: "info" | "warning" | "critical";
  text: string;
  /** Set when announced to one room only. */
  room: string | null;
  ts: string;
}

/** Call onEvent(announcement) for each announcement; returns a function that stops. */
export declare function onAnnouncement(onEvent: (announcement: Announcement) => void): () => void;

/** The last `limit` (default 20) announcements, newest first. */
export declare function recentAnnouncements(limit?: number): Promise<Announcement[]>;

export interface ConnectionState {
  connected: boolean;
  /** "polling" or "websocket" while connected, else null. */
  transport: "polling" | "websocket" | null;
  /** Why the last attempt failed, e.g. "unauthorized" when the token was refused; else null. */
  error: string | null;
}

/**
 * Call onChange(state) now and on every connect, disconnect, refusal and transport upgrade
 * of a namespace (default "/job"). Returns a function that stops.
 */
export declare function onConnection(
  onChange: (state: ConnectionState) => void,
  namespace?: Namespace,
): () => void;
