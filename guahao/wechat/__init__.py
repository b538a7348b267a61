"""The hospital's WeChat official account (公众号): 网页授权 sign-in by openid, template messages, and
a simulator of WeChat's side for tests and the demo (docs/wechat.md)."""
