"use strict";
// Renders this server's OpenAPI document: operations grouped by tag, each with its parameters,
// request body and answers, then every schema. Text from the document is only ever inserted as
// text (never as HTML).
(function () {
  const METHODS = ["get", "post", "put", "patch", "delete", "head", "options", "trace"];
  let doc = null;

  // Appends nodes and text to `parent`; arrays are flattened, null and false skipped.
  function add(parent, ...kids) {
    for (const kid of kids.flat(Infinity)) {
      if (kid === undefined || kid === null || kid === false) continue;
      parent.append(kid instanceof Node ? kid : String(kid));
    }
    return parent;
  }

  // An element: el("td", {class: "n"}, child, "text", [more]).
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    return add(e, kids);
  }

  // Text with `code` spans, paragraphs on blank lines.
  function rich(text) {
    const box = el("div", { class: "desc" });
    for (const para of String(text || "").split(/\n\s*\n/)) {
      if (!para.trim()) continue;
      const p = el("p");
      String(para).split("`").forEach((part, i) => {
        add(p, i % 2 ? el("code", {}, part) : part.replace(/\s*\n\s*/g, " "));
      });
      add(box, p);
    }
    return box;
  }

  function refName(ref) {
    return String(ref).split("/").pop();
  }

  // The object a local `$ref` points at.
  function deref(ref) {
    if (typeof ref !== "string" || !ref.startsWith("#/")) return null;
    let v = doc;
    for (const raw of ref.slice(2).split("/")) {
      const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
      if (v === null || typeof v !== "object" || !(key in v)) return null;
      v = v[key];
    }
    return v;
  }

  function schemaLink(ref) {
    const name = refName(ref);
    return el("a", { href: "#schema-" + name }, name);
  }

  // A one-line type: `string`, `Capsule[]`, `map of string`, `"a" | "b"`, with links to schemas.
  function typeOf(s) {
    if (!s || typeof s !== "object") return el("span", { class: "t" }, "any");
    const t = el("span", { class: "t" });
    if (s.$ref) {
      add(t, schemaLink(s.$ref));
      return t;
    }
    const alts = s.oneOf || s.anyOf;
    if (alts) {
      alts.forEach((a, i) => {
        if (i) add(t, " | ");
        add(t, typeOf(a));
      });
      return t;
    }
    if (s.allOf) {
      s.allOf.forEach((a, i) => {
        if (i) add(t, " & ");
        add(t, typeOf(a));
      });
      return t;
    }
    if (s.enum) {
      add(t, s.enum.map((v) => JSON.stringify(v)).join(" | "));
      return t;
    }
    const types = Array.isArray(s.type) ? s.type : s.type ? [s.type] : [];
    const nonNull = types.filter((x) => x !== "null");
    const nullable = types.includes("null");
    if (nonNull.includes("array") || (!types.length && s.items)) {
      add(t, typeOf(s.items), "[]");
    } else if ((nonNull.includes("object") || !types.length) && s.additionalProperties && typeof s.additionalProperties === "object" && !s.properties) {
      add(t, "map of ", typeOf(s.additionalProperties));
    } else if (nonNull.length) {
      add(t, nonNull.join(" | "));
    } else if (s.properties) {
      add(t, "object");
    } else {
      add(t, "any");
    }
    if (s.format) add(t, " (" + s.format + ")");
    if (s.contentMediaType) add(t, " (" + s.contentMediaType + ")");
    if (nullable) add(t, " | null");
    return t;
  }

  // Properties and required names of an object schema (allOf merged, refs followed).
  function objectParts(s, seen) {
    seen = seen || new Set();
    const out = { props: [], required: new Set() };
    if (!s || typeof s !== "object") return out;
    if (s.$ref) {
      if (seen.has(s.$ref)) return out;
      seen.add(s.$ref);
      return objectParts(deref(s.$ref), seen);
    }
    for (const part of s.allOf || []) {
      const sub = objectParts(part, seen);
      out.props.push(...sub.props);
      sub.required.forEach((r) => out.required.add(r));
    }
    for (const [name, prop] of Object.entries(s.properties || {})) out.props.push([name, prop]);
    (s.required || []).forEach((r) => out.required.add(r));
    return out;
  }

  function isObjectSchema(s) {
    if (!s || typeof s !== "object") return false;
    if (s.$ref) return isObjectSchema(deref(s.$ref));
    return Boolean(s.properties || s.allOf);
  }

  function notes(s) {
    const bits = [];
    if (!s || typeof s !== "object") return bits;
    if (s.description) bits.push(rich(s.description));
    const limits = [];
    if (s.minimum !== undefined) limits.push("≥ " + s.minimum);
    if (s.maximum !== undefined) limits.push("≤ " + s.maximum);
    if (s.minLength !== undefined) limits.push("length ≥ " + s.minLength);
    if (s.maxLength !== undefined) limits.push("length ≤ " + s.maxLength);
    if (limits.length) bits.push(el("div", { class: "muted" }, limits.join(", ")));
    if (s.default !== undefined) bits.push(el("div", { class: "muted" }, "default ", el("code", {}, JSON.stringify(s.default))));
    const ex = s.example !== undefined ? s.example : Array.isArray(s.examples) && s.examples.length ? s.examples[0] : undefined;
    if (ex !== undefined) bits.push(el("div", { class: "muted" }, "e.g. ", el("code", {}, JSON.stringify(ex))));
    return bits;
  }

  // A table of an object's fields; inline objects nest, named schemas are links.
  function fieldsTable(s, depth) {
    const { props, required } = objectParts(s);
    if (!props.length) return el("p", { class: "muted" }, "An object with no fixed fields.");
    return el(
      "table",
      {},
      el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "")),
      props.map(([name, prop]) => {
        const inline = prop && !prop.$ref && isObjectSchema(prop) && depth < 4;
        return el(
          "tr",
          {},
          el("td", { class: "n" }, name, required.has(name) ? el("span", { class: "req", title: "required" }, " *") : null),
          el("td", {}, typeOf(prop)),
          el("td", {}, notes(prop), inline ? el("div", { class: "nested" }, fieldsTable(prop, depth + 1)) : null)
        );
      })
    );
  }

  // A body: its type, and (when `expand`) its fields when it is an object.
  function bodyView(schema, expand) {
    const box = el("div");
    add(box, el("div", {}, typeOf(schema)));
    let target = schema;
    if (target && target.type === "array" && target.items) target = target.items;
    if (expand && isObjectSchema(target)) add(box, el("div", { class: "nested" }, fieldsTable(target, 0)));
    return box;
  }

  function contentView(content, expand) {
    return Object.entries(content || {}).map(([type, media]) =>
      el("div", {}, el("span", { class: "muted" }, type), media && media.schema ? bodyView(media.schema, expand) : null)
    );
  }

  function securityView(op) {
    const reqs = op.security || doc.security || [];
    if (!reqs.length || reqs.some((r) => !Object.keys(r).length)) {
      return el("p", { class: "sec muted" }, "No credentials needed.");
    }
    const schemes = (doc.components && doc.components.securitySchemes) || {};
    const names = reqs.map((r) =>
      Object.keys(r)
        .map((n) => {
          const s = schemes[n] || {};
          if (s.type === "apiKey") return s.name + " header";
          if (s.type === "http") return "Authorization: " + (s.scheme === "bearer" ? "Bearer" : s.scheme);
          return n;
        })
        .join(" + ")
    );
    return el("p", { class: "sec" }, "Credentials: ", names.map((n, i) => [i ? " or " : "", el("code", {}, n)]));
  }

  function paramsView(params) {
    return el(
      "table",
      {},
      el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "")),
      params.map((p) => {
        if (p.$ref) p = deref(p.$ref) || p;
        return el(
          "tr",
          {},
          el("td", { class: "n" }, p.name, p.required ? el("span", { class: "req", title: "required" }, " *") : null),
          el("td", {}, p.in),
          el("td", {}, typeOf(p.schema)),
          el("td", {}, p.description ? rich(p.description) : null, notes(p.schema))
        );
      })
    );
  }

  function responsesView(responses) {
    return el(
      "table",
      {},
      el("tr", {}, el("th", {}, "status"), el("th", {}, "")),
      Object.entries(responses || {}).map(([status, r]) => {
        const named = r.$ref ? refName(r.$ref) : null;
        if (r.$ref) r = deref(r.$ref) || {};
        return el(
          "tr",
          {},
          el("td", { class: "status s" + status[0] }, status),
          // Success bodies in full; error bodies are all the same (a link to it is enough).
          el("td", {}, rich(r.description || named || ""), contentView(r.content, status < "4"))
        );
      })
    );
  }

  function anchorOf(method, path, op) {
    return "op-" + (op.operationId || method + path).replace(/[^A-Za-z0-9_-]/g, "_");
  }

  function operationView(method, path, op) {
    const body = el("div", { class: "body" });
    if (op.description) add(body, rich(op.description));
    add(body, securityView(op));
    if (op.parameters && op.parameters.length) add(body, el("h4", {}, "Parameters"), paramsView(op.parameters));
    if (op.requestBody) {
      let rb = op.requestBody;
      if (rb.$ref) rb = deref(rb.$ref) || {};
      add(body, 
        el("h4", {}, "Request body", rb.required ? "" : " (optional)"),
        rb.description ? rich(rb.description) : null,
        contentView(rb.content, true)
      );
    }
    add(body, el("h4", {}, "Responses"), responsesView(op.responses));
    const d = el(
      "details",
      { class: "op", id: anchorOf(method, path, op) },
      el("summary", {}, el("span", { class: "m " + method }, method.toUpperCase()), el("span", { class: "path" }, path), el("span", { class: "sum" }, op.summary || "")),
      body
    );
    d.dataset.search = (method + " " + path + " " + (op.summary || "") + " " + (op.description || "")).toLowerCase();
    return d;
  }

  function render() {
    const info = doc.info || {};
    document.title = info.title || "API";
    document.getElementById("title").textContent = info.title || "API";
    document.getElementById("version").textContent = (info.version ? "v" + info.version : "") + " · OpenAPI " + doc.openapi;
    const main = document.getElementById("main");
    const nav = document.getElementById("nav");
    main.textContent = "";
    nav.textContent = "";
    if (info.description) add(main, rich(info.description));

    // Operations by tag, in the document's tag order.
    const byTag = new Map((doc.tags || []).map((t) => [t.name, []]));
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const method of METHODS) {
        const op = item[method];
        if (!op) continue;
        const tag = (op.tags && op.tags[0]) || "other";
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push([method, path, op]);
      }
    }
    const tagInfo = new Map((doc.tags || []).map((t) => [t.name, t]));
    for (const [tag, ops] of byTag) {
      if (!ops.length) continue;
      const section = el("section", { class: "tag", id: "tag-" + tag }, el("h2", {}, tag));
      const t = tagInfo.get(tag);
      if (t && t.description) add(section, el("p", {}, t.description));
      const navGroup = el("div", {}, el("h3", {}, tag));
      for (const [method, path, op] of ops) {
        const view = operationView(method, path, op);
        add(section, view);
        const link = el("a", { href: "#" + view.id, title: op.summary || "" }, el("span", { class: "m " + method }, method.toUpperCase()), el("span", { class: "p" }, path));
        link.addEventListener("click", () => {
          view.open = true;
        });
        link.dataset.target = view.id;
        add(navGroup, link);
      }
      add(main, section);
      add(nav, navGroup);
    }

    // Every schema.
    const schemas = (doc.components && doc.components.schemas) || {};
    const schemaSection = el("section", { class: "tag", id: "schemas" }, el("h2", {}, "Schemas"));
    for (const name of Object.keys(schemas).sort()) {
      const s = schemas[name];
      const box = el("div", { class: "schema", id: "schema-" + name }, el("h3", {}, name));
      if (s.description) add(box, rich(s.description));
      if (isObjectSchema(s)) add(box, fieldsTable(s, 0));
      else add(box, el("div", {}, typeOf(s)), notes(Object.assign({}, s, { description: undefined })));
      add(schemaSection, box);
    }
    add(main, schemaSection);
    add(nav, el("div", {}, el("h3", {}, el("a", { href: "#schemas" }, "Schemas"))));

    // Open the operation the address names.
    const target = location.hash && document.getElementById(location.hash.slice(1));
    if (target && target.tagName === "DETAILS") {
      target.open = true;
      target.scrollIntoView();
    }
  }

  function filter(text) {
    const words = text.toLowerCase().split(/\s+/).filter(Boolean);
    for (const op of document.querySelectorAll("details.op")) {
      const hit = words.every((w) => op.dataset.search.includes(w));
      op.classList.toggle("hidden", !hit);
      const link = document.querySelector('nav a[data-target="' + op.id + '"]');
      if (link) link.classList.toggle("hidden", !hit);
    }
    for (const section of document.querySelectorAll("section.tag")) {
      if (section.id === "schemas") continue;
      const any = section.querySelector("details.op:not(.hidden)");
      section.classList.toggle("hidden", !any);
    }
  }

  document.getElementById("filter").addEventListener("input", (e) => filter(e.target.value));

  fetch("openapi.json", { credentials: "same-origin" })
    .then((r) => {
      if (!r.ok) throw new Error("openapi.json answered " + r.status);
      return r.json();
    })
    .then((d) => {
      doc = d;
      render();
    })
    .catch((e) => {
      const main = document.getElementById("main");
      main.textContent = "";
      add(main, el("p", { class: "err" }, "Could not load openapi.json: " + e.message));
    });
})();
