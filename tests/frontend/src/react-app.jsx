// The README's React hooks (readme.jsx, copied from README.md as they are) in an app:
// two components on one job, a third on another job, the connection status, and the
// jobs of one tag (?tag=).
import { createRoot } from "react-dom/client";
import { BuildProgress, ConnectionStatus, MyJobs } from "./readme.jsx";
import { one, other, params } from "./setup.js";

const tag = params.get("tag");

createRoot(document.getElementById("app")).render(
  <>
    <ConnectionStatus />
    <div id="first">
      <BuildProgress id={one} />
    </div>
    <div id="second">
      <BuildProgress id={one} />
    </div>
    <div id="third">
      <BuildProgress id={other} />
    </div>
    <div id="mine">{tag && <MyJobs tag={tag} />}</div>
  </>,
);
