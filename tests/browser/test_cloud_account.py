"""The /account guide to connecting one's own AWS account, in Chromium (sandbox cloud: any role is trusted)."""

from __future__ import annotations

import json

from playwright.sync_api import Browser, expect

from tests.browser.conftest import LiveServer
from tests.browser.helpers import DESKTOP, assert_accessible, sign_up, uncaught_errors, unique_name


def test_the_account_page_guides_the_aws_set_up(browser: Browser, live_server: LiveServer) -> None:
    page = browser.new_page(base_url=live_server.url, viewport=DESKTOP)
    errors = uncaught_errors(page)
    try:
        sign_up(page, unique_name("aws"))
        page.goto("/account")
        section = page.locator("[data-aws]")
        expect(section.locator("[data-aws-status]")).to_have_text("Not connected")
        external_id = page.request.get("/api/cloud/aws").json()["external_id"]
        expect(section.locator("[data-aws-external-id]")).to_have_text(external_id)
        trust = json.loads(section.locator("[data-aws-trust-policy]").inner_text())
        assert trust["Statement"][0]["Condition"] == {"StringEquals": {"sts:ExternalId": external_id}}
        assert trust["Statement"][0]["Action"] == "sts:AssumeRole"
        permissions = json.loads(section.locator("[data-aws-permissions]").inner_text())
        actions = {a for s in permissions["Statement"] for a in s["Action"]}
        assert {"ec2:RunInstances", "rds:CreateDBInstance", "s3:CreateBucket", "s3:ListAllMyBuckets"} <= actions

        section.get_by_label("Role ARN").fill("not-an-arn")
        section.get_by_role("button", name="Connect").click()
        expect(section.locator("[data-form-error]")).to_contain_text("role_arn must look like")

        section.get_by_label("Role ARN").fill("arn:aws:iam::111122223333:role/DevOpsAgent")
        section.get_by_role("button", name="Connect").click()
        expect(section.locator("[data-aws-status]")).to_have_text("Connected")
        expect(section.locator("[data-aws-connected]")).to_contain_text("account 111122223333 in us-east-1")
        assert_accessible(page)
        section.get_by_role("button", name="Disconnect").click()
        expect(section.locator("[data-aws-status]")).to_have_text("Not connected")
        assert not errors, errors
    finally:
        page.close()
