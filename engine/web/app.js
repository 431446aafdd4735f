// The web chat page (served by engine/api/page.py). No build step, no dependency.
// Model and user text only ever reaches the page through textContent and DOM nodes built here
// (see renderMarkdown): never innerHTML, so a reply cannot inject markup or script. The strict
// Content-Security-Policy (no inline script, no eval) is the second wall.
"use strict";

(() => {
  const KEY = "assistant.key";
  const RETRYABLE = new Set(["unavailable", "overloaded"]);
  const $ = (id) => document.getElementById(id);
  const state = {
    key: sessionStorage.getItem(KEY) || "",
    ws: null,
    failures: 0,
    conversation: null, // the open conversation's id; null for a new chat
    view: 0, // bumped on every switch, so a late reply does not land in another conversation
    pending: new Map(), // client message id -> reply being received
  };

  // ---- HTTP ----
  function headers() {
    return state.key ? { Authorization: "Bearer " + state.key } : {};
  }

  async function api(path, method = "GET") {
    const res = await fetch(path, { method, headers: headers(), cache: "no-store" });
    if (res.status === 401) {
      showSignin(state.key ? "This API key was refused." : "");
      throw new Error("unauthorized");
    }
    if (!res.ok) throw new Error(method + " " + path + ": " + res.status);
    return res.status === 204 ? null : res.json();
  }

  // ---- sign in ----
  function showSignin(message) {
    if (state.ws) {
      const ws = state.ws;
      state.ws = null;
      ws.close();
    }
    $("app").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
  }

  async function boot() {
    try {
      await loadConversations();
    } catch (err) {
      if (err.message !== "unauthorized") setStatus("Offline: " + err.message);
      return;
    }
    $("signin").hidden = true;
    $("app").hidden = false;
    loadModels().catch(() => {});
    if (!state.ws) connect();
    $("input").focus();
  }

  // ---- conversations ----
  async function loadConversations() {
    const body = await api("/api/v1/conversations?limit=100");
    const list = $("conversations");
    list.replaceChildren();
    for (const c of body.conversations) {
      const li = el("li", c.id === state.conversation ? "current" : "");
      if (c.id === state.conversation) $("title").textContent = c.title || "Conversation";
      const open = el("button", "open", c.title || "(untitled)");
      open.type = "button";
      open.title = c.title || "";
      open.addEventListener("click", () => openConversation(c.id, c.title));
      const del = el("button", "delete", "\u00d7");
      del.type = "button";
      del.setAttribute("aria-label", "Delete conversation");
      del.addEventListener("click", () => deleteConversation(c.id));
      li.append(open, del);
      list.append(li);
    }
  }

  async function loadModels() {
    const body = await api("/v1/models");
    const select = $("model");
    const options = body.data.map((m) => {
      const option = el("option", "", m.default ? m.id + " (default)" : m.id);
      option.value = m.default ? "" : m.id;
      return option;
    });
    select.replaceChildren(...options.sort((a, b) => (a.value === "" ? -1 : b.value === "" ? 1 : 0)));
  }

  async function openConversation(id, title) {
    state.view += 1;
    state.conversation = id;
    $("title").textContent = title || "Conversation";
    $("messages").replaceChildren();
    document.body.classList.remove("menu-open");
    const view = state.view;
    const body = await api("/api/v1/history?limit=200&conversation_id=" + encodeURIComponent(id));
    if (view !== state.view) return;
    for (const m of body.messages.slice().reverse()) {
      if ((m.role === "user" || m.role === "assistant") && m.content) addMessage(m.role, m.content);
    }
    await loadConversations();
    showStop();
  }

  function newChat() {
    state.view += 1;
    state.conversation = null;
    $("title").textContent = "New chat";
    $("messages").replaceChildren();
    document.body.classList.remove("menu-open");
    loadConversations().catch(() => {});
    showStop();
    $("input").focus();
  }

  async function deleteConversation(id) {
    await api("/api/v1/conversations/" + encodeURIComponent(id), "DELETE");
    if (id === state.conversation) newChat();
    else await loadConversations();
  }

  // ---- messages ----
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function addMessage(role, text) {
    const li = el("li", "msg " + role);
    const body = el("div", "body");
    li.append(body);
    if (role === "assistant") renderMarkdown(text, body);
    else body.textContent = text;
    $("messages").append(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  function send(text) {
    const id = "w-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 10);
    const frame = { type: "chat", id, message: text };
    if (state.conversation) frame.conversation_id = state.conversation;
    if ($("model").value) frame.model = $("model").value;
    addMessage("user", text);
    const li = addMessage("assistant", "");
    li.classList.add("streaming");
    const reply = { id, frame, li, body: li.querySelector(".body"), tools: new Map(), text: "", seq: 0, view: state.view };
    state.pending.set(id, reply);
    transmit(frame);
    showStop();
  }

  function transmit(frame) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(frame));
  }

  function stop() {
    for (const reply of state.pending.values()) {
      if (reply.view !== state.view) continue;
      reply.stopping = true;
      transmit({ type: "cancel", id: reply.id });
    }
  }

  function finish(reply, note, kind) {
    state.pending.delete(reply.id);
    reply.li.classList.remove("streaming");
    if (note) reply.li.append(el("p", "note " + (kind || ""), note));
    showStop();
  }

  function showStop() {
    const busy = [...state.pending.values()].some((r) => r.view === state.view);
    $("stop").hidden = !busy;
    $("send").hidden = busy;
  }

  // ---- the websocket: frames, reconnect, resume ----
  function connect() {
    // The channel's path comes from the spec (channels.websocket.path), written into the page.
    const path = document.body.dataset.websocket;
    if (!path) {
      setStatus("Replies need the WebSocket channel: enable channels.websocket in the spec.");
      return;
    }
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
    // A browser cannot set Authorization on a websocket: the key rides as a subprotocol that the
    // engine reads and never echoes (docs/websocket.md, "Connecting from a browser").
    const protocols = state.key ? ["assistant.v1", "bearer." + state.key] : ["assistant.v1"];
    const ws = new WebSocket(url, protocols);
    state.ws = ws;
    ws.addEventListener("open", () => {
      state.failures = 0;
      setStatus("");
      // Resume: every reply not finished yet is asked for again under its id. The engine never
      // calls the model twice for one id: it follows the running reply or replays the stored one.
      for (const reply of state.pending.values()) {
        transmit(reply.stopping ? { type: "cancel", id: reply.id } : reply.frame);
      }
    });
    ws.addEventListener("message", (event) => onFrame(JSON.parse(event.data)));
    ws.addEventListener("close", () => {
      if (state.ws !== ws) return; // replaced or signed out
      state.ws = null;
      state.failures += 1;
      setStatus("Reconnecting\u2026");
      const delay = Math.min(5000, 200 * 2 ** Math.min(state.failures, 5));
      setTimeout(reconnect, delay);
    });
  }

  async function reconnect() {
    if (state.ws || $("app").hidden) return;
    if (state.failures > 3) {
      try {
        await loadConversations(); // a refused key shows the sign-in form instead of looping
      } catch (err) {
        if (err.message === "unauthorized") return;
      }
    }
    if (!state.ws) connect();
  }

  function onFrame(frame) {
    if (frame.type === "ping") return transmit({ type: "pong" });
    const reply = frame.id ? state.pending.get(frame.id) : undefined;
    if (frame.type === "error" && !reply) return setStatus(frame.message);
    if (!reply) return;
    if (frame.type === "chunk") {
      if (frame.seq !== reply.seq) return; // already shown before a reconnect
      reply.seq += 1;
      reply.text += frame.delta;
      renderMarkdown(reply.text, reply.body);
    } else if (frame.type === "tool") {
      showTool(reply, frame);
    } else if (frame.type === "approval_request") {
      askApproval(reply, frame);
    } else if (frame.type === "done") {
      reply.text = frame.reply;
      renderMarkdown(reply.text, reply.body);
      if (reply.view === state.view && !state.conversation) state.conversation = frame.conversation_id;
      finish(reply);
      loadConversations().catch(() => {});
    } else if (frame.type === "cancelled") {
      finish(reply, "Stopped.", "stopped");
    } else if (frame.type === "error") {
      if (RETRYABLE.has(frame.code)) return setTimeout(() => transmit(reply.frame), 1000);
      const text =
        frame.code === "timeout"
          ? "The reply timed out: the model did not answer in time. Send the message again to retry."
          : "The reply failed (" + frame.code + "): " + frame.message;
      finish(reply, text, "error");
    }
    reply.li.scrollIntoView({ block: "end" });
  }

  function showTool(reply, frame) {
    if (frame.event === "sent") return reply.li.append(el("p", "note", frame.text));
    if (!frame.call_id) return;
    let line = reply.tools.get(frame.call_id);
    if (!line) {
      line = el("p", "tool");
      reply.tools.set(frame.call_id, line);
      reply.li.insertBefore(line, reply.body);
    }
    const marks = { started: "\u2699 running ", finished: "\u2713 ran ", failed: "\u2717 failed " };
    line.textContent = (marks[frame.event] || frame.event + " ") + frame.name;
    if (frame.event === "failed") line.textContent += " (" + frame.outcome + ")";
    line.dataset.event = frame.event;
  }

  function askApproval(reply, frame) {
    const box = el("div", "approval");
    box.append(el("p", "", frame.text));
    for (const [label, approve] of [["Allow", true], ["Deny", false]]) {
      const button = el("button", "", label);
      button.type = "button";
      button.addEventListener("click", () => {
        transmit({ type: "approval", approval_id: frame.approval_id, approve });
        box.replaceChildren(el("p", "note", approve ? "Allowed." : "Denied."));
      });
      box.append(button);
    }
    reply.li.insertBefore(box, reply.body);
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  // ---- Markdown, as DOM nodes: fences, headings, lists, paragraphs; code, bold, italic, links ----
  function renderMarkdown(text, into) {
    const out = [];
    const lines = text.split("\n");
    let i = 0;
    const special = (line) => /^(```|#{1,6}\s|\s*[-*]\s+|\s*\d+[.)]\s+)/.test(line);
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(/^```\s*([\w+.-]*)\s*$/);
      if (fence) {
        const code = [];
        for (i += 1; i < lines.length && !/^```\s*$/.test(lines[i]); i += 1) code.push(lines[i]);
        i += 1; // the closing fence (an unclosed one, while streaming, runs to the end)
        const pre = el("pre");
        const node = el("code", "", code.join("\n"));
        if (fence[1]) node.dataset.lang = fence[1];
        pre.append(node);
        out.push(pre);
      } else if (/^#{1,6}\s/.test(line)) {
        const level = line.match(/^#+/)[0].length;
        out.push(inline(el("h" + Math.min(6, level + 2)), line.replace(/^#+\s+/, "")));
        i += 1;
      } else if (/^\s*([-*]|\d+[.)])\s+/.test(line)) {
        const ordered = /^\s*\d/.test(line);
        const list = el(ordered ? "ol" : "ul");
        const item = ordered ? /^\s*\d+[.)]\s+/ : /^\s*[-*]\s+/;
        for (; i < lines.length && item.test(lines[i]); i += 1) list.append(inline(el("li"), lines[i].replace(item, "")));
        out.push(list);
      } else if (line.trim() === "") {
        i += 1;
      } else {
        const para = [];
        for (; i < lines.length && lines[i].trim() !== "" && !special(lines[i]); i += 1) para.push(lines[i]);
        out.push(inline(el("p"), para.join("\n")));
      }
    }
    into.replaceChildren(...out);
  }

  const INLINE = /`([^`\n]+)`|\*\*([^*\n]+)\*\*|\*([^*\n]+)\*|\[([^\]\n]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()]+)/g;

  function inline(node, text) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      node.append(text.slice(last, m.index));
      last = m.index + m[0].length;
      if (m[1] !== undefined) node.append(el("code", "", m[1]));
      else if (m[2] !== undefined) node.append(el("strong", "", m[2]));
      else if (m[3] !== undefined) node.append(el("em", "", m[3]));
      else node.append(link(m[4] !== undefined ? m[4] : m[6], m[5] !== undefined ? m[5] : m[6], m[0]));
    }
    node.append(text.slice(last));
    return node;
  }

  function link(label, href, raw) {
    let url;
    try {
      url = new URL(href);
    } catch {
      return document.createTextNode(raw);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") return document.createTextNode(raw);
    const a = el("a", "", label);
    a.href = url.href;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    return a;
  }

  // ---- wiring ----
  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.key = $("key").value.trim();
      sessionStorage.setItem(KEY, state.key);
      boot();
    });
    $("signout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      state.key = "";
      showSignin("");
    });
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("input").value.trim();
      if (!text || !$("stop").hidden) return;
      $("input").value = "";
      send(text);
    });
    $("input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        $("composer").requestSubmit();
      }
    });
    $("stop").addEventListener("click", stop);
    $("new").addEventListener("click", newChat);
    $("menu").addEventListener("click", () => document.body.classList.toggle("menu-open"));
    boot();
  });
})();
