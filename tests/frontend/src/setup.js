// The page's query string: ?job=A&job=B&transport=websocket|polling (&token= is read by
// index.html into window.SWITCHBOARD_TOKEN, which the README's React snippet uses).
import { configure, socket } from "http://127.0.0.1:8001/switchboard.js";

export const params = new URLSearchParams(location.search);
export const [one, other] = params.getAll("job");
const transport = params.get("transport");
configure({ transports: transport ? [transport] : undefined });

// For the test: the transport that the app's /job socket ended up on.
window.transportName = () => socket("/job").io.engine.transport.name;
