"""SMS through Aliyun's 短信服务 (dysmsapi, SendSms): the signed client, the placeholder → template
variable mapping, and a simulator of the provider for tests and development (docs/messages.md)."""
