// Bundle a test app with esbuild, the way an app's build does:
//
//   node build.mjs ENTRY OUTFILE url|package
//
// "url": the README's `import … from "http://…/switchboard.js"` stays a URL that the browser
// loads from the server (esbuild and Vite leave URL imports alone). "package": it becomes the
// switchboard-client package that `switchboard client-js` wrote and `npm install` linked
// beside ENTRY. Either way record.js sits in between and logs what each watchJob() caller gets.
// React, react-dom and Vue come from this folder's node_modules.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const [entry, outfile, mode] = process.argv.slice(2);
if (!["url", "package"].includes(mode)) throw new Error(`mode must be url or package: ${mode}`);

let moduleUrl = null; // the one URL the app's sources import the module from
const switchboard = {
  name: "switchboard",
  setup(bundler) {
    bundler.onResolve({ filter: /^https?:\/\/.*\/switchboard\.js$/ }, (args) => {
      if (moduleUrl !== null && moduleUrl !== args.path) {
        return { errors: [{ text: `two module URLs: ${moduleUrl} and ${args.path}` }] };
      }
      moduleUrl = args.path;
      return { path: path.join(path.dirname(entry), "record.js") };
    });
    bundler.onResolve({ filter: /^switchboard:module$/ }, (args) =>
      mode === "url"
        ? { path: moduleUrl, external: true }
        : bundler.resolve("switchboard-client", { kind: args.kind, resolveDir: args.resolveDir }),
    );
  },
};

await build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  format: "esm",
  jsx: "automatic",
  nodePaths: [path.join(here, "node_modules")],
  plugins: [switchboard],
  define: {
    "process.env.NODE_ENV": '"production"',
    __VUE_OPTIONS_API__: "true",
    __VUE_PROD_DEVTOOLS__: "false",
    __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: "false",
  },
  logLevel: "warning",
});
