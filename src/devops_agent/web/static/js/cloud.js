// "Your AWS account" on /account: show the external id and the trust policy to paste,
// connect a role (the server assumes it before keeping it) or disconnect it.
import { api, errorMessage } from "./common.js";

const section = document.querySelector("[data-aws]");
const form = section.querySelector("[data-aws-form]");
const formError = form.querySelector("[data-form-error]");
const status = section.querySelector("[data-aws-status]");
const connected = section.querySelector("[data-aws-connected]");
const disconnect = section.querySelector("[data-aws-disconnect]");
const trust = section.querySelector("[data-aws-trust-policy]");

function trustPolicy(externalId) {
  const policy = {
    Version: "2012-10-17",
    Statement: [
      {
        Effect: "Allow",
        Principal: { AWS: trust.dataset.principal },
        Action: "sts:AssumeRole",
        Condition: { StringEquals: { "sts:ExternalId": externalId } },
      },
    ],
  };
  return JSON.stringify(policy, null, 2);
}

function show(connection) {
  section.querySelector("[data-aws-external-id]").textContent = connection.external_id;
  trust.textContent = trustPolicy(connection.external_id);
  status.textContent = connection.connected ? "Connected" : "Not connected";
  connected.hidden = !connection.connected;
  connected.textContent = connection.connected
    ? `Connected to account ${connection.account_id} in ${connection.region} through ${connection.role_arn}.`
    : "";
  disconnect.hidden = !connection.connected;
  if (connection.connected) {
    form.elements.namedItem("role_arn").value = connection.role_arn;
    form.elements.namedItem("region").value = connection.region;
  }
}

async function load() {
  const result = await api("GET", "/api/cloud/aws");
  if (result.ok) show(result.data);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  formError.textContent = "";
  const button = form.querySelector("[data-aws-connect]");
  button.disabled = true;
  button.textContent = "Checking with AWS…";
  const body = {
    role_arn: form.elements.namedItem("role_arn").value.trim(),
    region: form.elements.namedItem("region").value.trim(),
  };
  const result = await api("PUT", "/api/cloud/aws", body);
  button.disabled = false;
  button.textContent = "Connect";
  if (result.ok) show(result.data);
  else {
    formError.textContent = errorMessage(result);
    formError.focus();
  }
});

disconnect.addEventListener("click", async () => {
  const result = await api("DELETE", "/api/cloud/aws");
  if (result.ok) await load();
  else formError.textContent = errorMessage(result);
});

load();
