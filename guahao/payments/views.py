from django.http import HttpRequest, HttpResponse


def sandbox_pay_page(request: HttpRequest, out_trade_no: str) -> HttpResponse:
    return HttpResponse(status=404)
