// The README's Vue composables (readme.js, copied from README.md as they are) in an app:
// two components on one job, a third on another job, and the connection status.
import { createApp, h } from "vue";
import { configure } from "http://127.0.0.1:8001/switchboard.js";
import { useConnection, useJob } from "./readme.js";
import { one, other } from "./setup.js";

configure({ url: "http://127.0.0.1:8001", token: window.SWITCHBOARD_TOKEN }); // main.js's line

const BuildProgress = {
  props: ["id"],
  setup(props) {
    const job = useJob(props.id);
    return () =>
      h("progress", { value: job.value?.progress ?? 0, max: 100, title: job.value?.message ?? "" });
  },
};

const ConnectionStatus = {
  setup() {
    const connection = useConnection();
    return () => {
      const { connected, error } = connection.value;
      const text = error ? `offline: ${error}` : connected ? "live" : "connecting…";
      return h("p", { role: "status" }, text);
    };
  },
};

const App = {
  render: () => [
    h(ConnectionStatus),
    h("div", { id: "first" }, h(BuildProgress, { id: one })),
    h("div", { id: "second" }, h(BuildProgress, { id: one })),
    h("div", { id: "third" }, h(BuildProgress, { id: other })),
  ],
};

createApp(App).mount("#app");
